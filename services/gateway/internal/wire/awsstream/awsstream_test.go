package awsstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"
)

type got struct {
	Name, Data string
	Exception  bool
	RawLen     int
}

// readAll reads every frame of r, returning the frames and the error
// that ended the stream (nil at io.EOF).
func readAll(r io.Reader, size, limit int) ([]got, error) {
	rd := NewReader(bufio.NewReaderSize(r, size), limit)
	var out []got
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, got{Name: string(ev.Name), Data: string(ev.Data), Exception: ev.Exception, RawLen: len(ev.Raw)})
	}
}

// frame encodes one message with the SDK's encoder.
func frame(t testing.TB, headers eventstream.Headers, payload string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: headers, Payload: []byte(payload)}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func event(t testing.TB, typ, payload string) []byte {
	return frame(t, eventstream.Headers{
		{Name: ":event-type", Value: eventstream.StringValue(typ)},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("event")},
	}, payload)
}

func exception(t testing.TB, typ, payload string) []byte {
	return frame(t, eventstream.Headers{
		{Name: ":exception-type", Value: eventstream.StringValue(typ)},
		{Name: ":content-type", Value: eventstream.StringValue("application/json")},
		{Name: ":message-type", Value: eventstream.StringValue("exception")},
	}, payload)
}

// sample is a ConverseStream answer with every kind of frame.
func sample(t testing.TB) ([]byte, []got) {
	var b []byte
	var want []got
	add := func(f []byte, g got) {
		b = append(b, f...)
		g.RawLen = len(f)
		want = append(want, g)
	}
	add(event(t, "messageStart", `{"role":"assistant","p":"abc"}`), got{Name: "messageStart", Data: `{"role":"assistant","p":"abc"}`})
	add(event(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hi"}}`), got{Name: "contentBlockDelta", Data: `{"contentBlockIndex":0,"delta":{"text":"Hi"}}`})
	add(event(t, "contentBlockStop", `{"contentBlockIndex":0}`), got{Name: "contentBlockStop", Data: `{"contentBlockIndex":0}`})
	add(frame(t, eventstream.Headers{
		{Name: ":event-type", Value: eventstream.StringValue("metadata")},
		{Name: "x-int", Value: eventstream.Int32Value(7)},
		{Name: "x-bool", Value: eventstream.BoolValue(true)},
	}, `{"usage":{"inputTokens":1}}`), got{Name: "metadata", Data: `{"usage":{"inputTokens":1}}`})
	add(exception(t, "throttlingException", `{"message":"slow down"}`), got{Name: "throttlingException", Data: `{"message":"slow down"}`, Exception: true})
	add(frame(t, eventstream.Headers{
		{Name: ":message-type", Value: eventstream.StringValue("error")},
		{Name: ":error-code", Value: eventstream.StringValue("InternalFailure")},
		{Name: ":error-message", Value: eventstream.StringValue(`it "broke"`)},
	}, ""), got{Name: "InternalFailure", Data: `{"message":"it \"broke\""}`, Exception: true})
	add(event(t, "empty", ""), got{Name: "empty"})
	return b, want
}

func TestReader(t *testing.T) {
	t.Parallel()
	stream, want := sample(t)
	for _, size := range []int{16, 64, 4096} {
		out, err := readAll(bytes.NewReader(stream), size, 1<<20)
		if err != nil {
			t.Fatalf("buffer %d: %v", size, err)
		}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("buffer %d: frames mismatch (-want +got):\n%s", size, diff)
		}
	}
}

func TestSplits(t *testing.T) {
	t.Parallel()
	stream, want := sample(t)
	for _, sizes := range [][]byte{{0}, {1, 2, 3, 5, 8, 13, 21}, {200, 7}, {11, 12, 13, 3, 0, 0, 1}} {
		out, err := readAll(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16, 1<<20)
		if err != nil {
			t.Fatalf("sizes %v: %v", sizes, err)
		}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("sizes %v: frames mismatch (-want +got):\n%s", sizes, diff)
		}
	}
}

func TestRaw(t *testing.T) {
	t.Parallel()
	stream, _ := sample(t)
	rd := NewReader(bytes.NewReader(stream), 1<<20)
	var again []byte
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, ev.Raw...)
	}
	if !bytes.Equal(stream, again) {
		t.Errorf("the frames' Raw bytes joined differ from the stream")
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	good := event(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hi"}}`)
	corrupt := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x20
		return b
	}
	tests := []struct {
		name   string
		stream []byte
		max    int
		want   error
	}{
		{"payload bit flipped", corrupt(len(good) - 8), 1 << 20, ErrMalformed},
		{"message crc flipped", corrupt(len(good) - 1), 1 << 20, ErrMalformed},
		{"prelude crc flipped", corrupt(9), 1 << 20, ErrMalformed},
		{"header bit flipped", corrupt(14), 1 << 20, ErrMalformed},
		{"length too short", append([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0}, good...), 1 << 20, ErrMalformed},
		{"headers longer than the frame", []byte{0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, 1 << 20, ErrMalformed},
		{"cut in the prelude", good[:5], 1 << 20, io.ErrUnexpectedEOF},
		{"cut in the payload", good[:len(good)-6], 1 << 20, io.ErrUnexpectedEOF},
		{"payload over the bound", good, 10, ErrEventTooLarge},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, 1 << 20, ErrEventTooLarge},
		{"unknown message type", frame(t, eventstream.Headers{{Name: ":message-type", Value: eventstream.StringValue("gossip")}}, "{}"), 1 << 20, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := readAll(bytes.NewReader(tt.stream), 64, tt.max)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBuffered(t *testing.T) {
	t.Parallel()
	a := event(t, "a", "{}")
	b := event(t, "b", "{}")
	rd := NewReader(bytes.NewReader(append(bytes.Clone(a), b...)), 1<<20)
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if got := rd.Buffered(); got != len(b) {
		t.Errorf("Buffered() after the first frame = %d, want %d", got, len(b))
	}
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	if got := rd.Buffered(); got != 0 {
		t.Errorf("Buffered() after the last frame = %d, want 0", got)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	rd := NewReader(strings.NewReader(""), 1<<20)
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next on an empty stream = %v, want io.EOF", err)
	}
	rd.Reset(bufio.NewReader(bytes.NewReader(event(t, "x", `{"a":1}`))))
	ev, err := rd.Next()
	if err != nil || string(ev.Name) != "x" || string(ev.Data) != `{"a":1}` {
		t.Errorf("Next after Reset = %q %q %v", ev.Name, ev.Data, err)
	}
}

// FuzzReader feeds arbitrary bytes whole and split at random boundaries:
// both must give the same frames and fail alike, and nothing may panic.
func FuzzReader(f *testing.F) {
	stream, _ := sample(f)
	f.Add(stream, []byte{3, 1, 4, 1, 5, 9, 2, 6})
	f.Add(stream[:len(stream)-3], []byte{0})
	f.Add([]byte{0, 0, 0, 16, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff}, []byte{1})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		want, werr := readAll(bytes.NewReader(stream), 1<<16, 1<<16)
		out, err := readAll(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16, 1<<16)
		if (werr == nil) != (err == nil) {
			t.Fatalf("errors differ: whole %v, split %v", werr, err)
		}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("split reading differs (-whole +split):\n%s", diff)
		}
	})
}

// BenchmarkReader reads a stream of typical ConverseStream text deltas.
func BenchmarkReader(b *testing.B) {
	var stream []byte
	for range 100 {
		stream = append(stream, event(b, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"tok "},"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"}`)...)
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	br := bufio.NewReaderSize(nil, 4096)
	rd := NewReader(br, 1<<20)
	for b.Loop() {
		br.Reset(bytes.NewReader(stream))
		rd.Reset(br)
		for {
			if _, err := rd.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
