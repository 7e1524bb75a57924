// Package sse reads server-sent event streams event by event, keeping each
// event's raw bytes so that a native relay forwards exactly what the
// provider sent (comments, CRLF line ends and field order included) while
// the gateway looks at the event's name and data. It does no I/O of its
// own beyond reading the io.Reader it is given, and holds at most one event
// (bounded by the caller) in memory.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrEventTooLarge reports an event longer than the reader's bound: a
// hostile or broken upstream must not make the gateway buffer without end.
var ErrEventTooLarge = errors.New("stream event too large")

// Event is one event of a stream. Its slices point into the reader's
// buffers and are valid until the next call to Next.
type Event struct {
	// Raw is every byte of the event as it arrived, its terminating blank
	// line included (absent for a last event cut off by the end of the
	// stream).
	Raw []byte
	// Name is the value of the event's `event:` field, empty when none.
	Name []byte
	// Data is the value of its `data:` fields, joined by newlines as the
	// SSE specification says; nil when it has none (a comment or a
	// keep-alive).
	Data []byte
}

// Reader splits a stream into events.
type Reader struct {
	br   *bufio.Reader
	max  int
	raw  []byte
	data []byte
}

// NewReader returns a reader over br that refuses events longer than max
// bytes.
func NewReader(br *bufio.Reader, max int) *Reader {
	return &Reader{br: br, max: max}
}

// Reset makes r read from br, keeping its buffers.
func (r *Reader) Reset(br *bufio.Reader) {
	r.br = br
	r.raw = r.raw[:0]
	r.data = r.data[:0]
}

// Buffered reports how many bytes of the stream have arrived and wait in
// the reader: a relay flushes when none do.
func (r *Reader) Buffered() int { return r.br.Buffered() }

var (
	fieldData  = []byte("data")
	fieldEvent = []byte("event")
)

// Next returns the next event. At the end of the stream it returns io.EOF
// (after a last event without a blank line, which it returns first); a
// broken stream returns the reader's error.
func (r *Reader) Next() (Event, error) {
	r.raw = r.raw[:0]
	r.data = r.data[:0]
	var (
		ev       Event
		dataSeen int // data lines so far
		nameAt   = -1
		nameEnd  int
	)
	for {
		lineStart := len(r.raw)
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(r.raw) > 0 {
				ev.Raw = r.raw
				if dataSeen > 0 {
					ev.Data = r.data
				}
				if nameAt >= 0 {
					ev.Name = r.raw[nameAt:nameEnd]
				}
				if len(bytes.TrimSpace(ev.Raw)) > 0 {
					return ev, nil
				}
			}
			return Event{}, err
		}
		content := trimEOL(line)
		if len(content) == 0 {
			if lineStart == 0 {
				// A blank line with no event before it: skip it.
				r.raw = r.raw[:0]
				continue
			}
			ev.Raw = r.raw
			if dataSeen > 0 {
				ev.Data = r.data
			}
			if nameAt >= 0 {
				ev.Name = r.raw[nameAt:nameEnd]
			}
			return ev, nil
		}
		if content[0] == ':' {
			continue // a comment
		}
		field, value := content, []byte(nil)
		if i := bytes.IndexByte(content, ':'); i >= 0 {
			field, value = content[:i], content[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch {
		case bytes.Equal(field, fieldData):
			if dataSeen > 0 {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			dataSeen++
		case bytes.Equal(field, fieldEvent):
			// value is a sub-slice of r.raw; remember where.
			off := len(r.raw) - len(line) + (len(content) - len(value))
			nameAt, nameEnd = off, off+len(value)
		}
	}
}

// readLine appends the next line (with its line end) to r.raw and returns
// it as a slice of r.raw.
func (r *Reader) readLine() ([]byte, error) {
	start := len(r.raw)
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(r.raw)+len(chunk) > r.max {
			return nil, ErrEventTooLarge
		}
		r.raw = append(r.raw, chunk...)
		switch {
		case err == nil:
			return r.raw[start:], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(r.raw) > start:
			return r.raw[start:], nil
		default:
			return nil, err
		}
	}
}

func trimEOL(line []byte) []byte {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// AppendEvent appends an event with the given name (none when empty) and
// data (a single line: it must hold no newline) to dst, ending it with a
// blank line.
func AppendEvent(dst []byte, name string, data []byte) []byte {
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}
