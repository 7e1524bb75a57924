// Package awsstream reads AWS eventstream framing
// (application/vnd.amazon.eventstream), the binary framing of Bedrock's
// ConverseStream and InvokeModelWithResponseStream answers, frame by
// frame, and AWS's error shape, which both APIs share. It offers the
// shape of the sse package's reader, so that the relay loop treats both
// alike: Next returns one event's name and data, io.EOF at the end. The
// frames' CRCs and headers are checked and decoded by the AWS SDK's
// eventstream package; this package only bounds what it buffers and names
// what a codec needs. It does no I/O of its own beyond reading the
// io.Reader it is given.
package awsstream

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// ErrEventTooLarge reports a frame whose payload is longer than the
// reader's bound, or whose headers are longer than MaxHeaders: a hostile
// or broken upstream must not make the gateway buffer without end.
var ErrEventTooLarge = errors.New("eventstream frame too large")

// ErrMalformed reports a frame that breaks the eventstream format: bad
// lengths, a CRC mismatch, undecodable headers, a stream cut inside a
// frame, or an unknown message type.
var ErrMalformed = errors.New("malformed eventstream frame")

// MaxHeaders bounds the headers of one frame: the eventstream format
// allows 128 KiB, and Bedrock's frames carry three short ones.
const MaxHeaders = 128 << 10

// The frame layout: a prelude of total length, headers length and the
// prelude's CRC, then headers, payload and the message CRC.
const (
	preludeLen = 12
	crcLen     = 4
	minFrame   = preludeLen + crcLen
)

// Event is one frame of a stream. Its slices point into the reader's
// buffers and are valid until the next call to Next.
type Event struct {
	// Raw is every byte of the frame as it arrived, CRCs included, for a
	// relay that forwards frames unchanged.
	Raw []byte
	// Name is the frame's :event-type header (messageStart,
	// contentBlockDelta, ...); for an exception frame its
	// :exception-type (throttlingException, ...); for an error frame its
	// :error-code.
	Name []byte
	// Data is the frame's payload, JSON in Bedrock's streams. For an
	// error frame without a payload it is {"message":<:error-message>},
	// so that every failure reads the same way.
	Data []byte
	// Exception says the frame reports a failure (:message-type
	// exception or error) rather than an event.
	Exception bool
}

// Reader splits an eventstream into frames. It is for one stream and not
// safe for concurrent use.
type Reader struct {
	br      *bufio.Reader
	max     int
	dec     *eventstream.Decoder
	src     bytes.Reader // over frame, for the SDK's decoder
	frame   []byte
	payload []byte
	name    []byte
	data    []byte
}

// NewReader returns a reader over r that refuses frames whose payload is
// longer than max bytes. A *bufio.Reader is used as it is; any other
// reader is buffered.
func NewReader(r io.Reader, max int) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Reader{br: br, max: max, dec: eventstream.NewDecoder()}
}

// Reset makes r read from br, keeping its buffers.
func (r *Reader) Reset(br *bufio.Reader) { r.br = br }

// Buffered reports how many bytes of the stream have arrived and wait in
// the reader: a relay flushes when none do.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Next returns the next frame (one without a :message-type header is an
// event). At the end of the stream it returns io.EOF;
// a stream that ends inside a frame returns an error wrapping
// ErrMalformed and io.ErrUnexpectedEOF, a frame that breaks the format
// one wrapping ErrMalformed, and one over the bound ErrEventTooLarge.
func (r *Reader) Next() (Event, error) {
	if cap(r.frame) < preludeLen {
		r.frame = make([]byte, preludeLen, 4096)
	}
	r.frame = r.frame[:preludeLen]
	if n, err := io.ReadFull(r.br, r.frame); err != nil {
		if errors.Is(err, io.EOF) && n == 0 {
			return Event{}, io.EOF
		}
		return Event{}, readError(err)
	}
	total := int64(binary.BigEndian.Uint32(r.frame[0:4]))
	headers := int64(binary.BigEndian.Uint32(r.frame[4:8]))
	// The lengths are checked before the prelude's CRC (which the SDK
	// checks with the rest): a corrupt length within the bounds costs at
	// most one bounded read before the checksum refuses the frame.
	switch {
	case total < minFrame || headers > total-minFrame:
		return Event{}, fmt.Errorf("%w: frame length %d with %d bytes of headers", ErrMalformed, total, headers)
	case headers > MaxHeaders:
		return Event{}, fmt.Errorf("%w: %d bytes of headers", ErrEventTooLarge, headers)
	case total-minFrame-headers > int64(r.max):
		return Event{}, fmt.Errorf("%w: a payload of %d bytes", ErrEventTooLarge, total-minFrame-headers)
	}
	r.frame = grow(r.frame, int(total))
	if _, err := io.ReadFull(r.br, r.frame[preludeLen:]); err != nil {
		return Event{}, readError(err)
	}
	r.src.Reset(r.frame)
	m, err := r.dec.Decode(&r.src, r.payload[:0])
	if err != nil {
		return Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	r.payload = m.Payload
	return r.event(&m)
}

// event names the decoded frame m.
func (r *Reader) event(m *eventstream.Message) (Event, error) {
	ev := Event{Raw: r.frame, Data: m.Payload}
	var nameHeader string
	switch typ := header(m, ":message-type"); typ {
	case "event", "":
		nameHeader = ":event-type"
	case "exception":
		ev.Exception, nameHeader = true, ":exception-type"
	case "error":
		ev.Exception, nameHeader = true, ":error-code"
		if len(ev.Data) == 0 {
			r.data = append(r.data[:0], `{"message":`...)
			r.data = jsonx.AppendString(r.data, header(m, ":error-message"))
			ev.Data = append(r.data, '}')
		}
	default:
		return Event{}, fmt.Errorf("%w: message type %q", ErrMalformed, bound(typ))
	}
	r.name = append(r.name[:0], header(m, nameHeader)...)
	ev.Name = r.name
	return ev, nil
}

// header returns a string header's value, empty when it is absent or not
// a string.
func header(m *eventstream.Message, name string) string {
	if v, ok := m.Headers.Get(name).(eventstream.StringValue); ok {
		return string(v)
	}
	return ""
}

func readError(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends inside a frame: %w", ErrMalformed, err)
	}
	return err
}

// grow returns b resized to n bytes, its first bytes kept.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

// bound cuts an upstream's value quoted in an error to a readable length.
func bound(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}
