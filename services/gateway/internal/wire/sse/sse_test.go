package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/moat-ai/moat/services/gateway/internal/wire/wiretest"

	"github.com/google/go-cmp/cmp"
)

type got struct{ Raw, Name, Data string }

// readAll reads every event of r, the reader's buffer being size bytes.
func readAll(r io.Reader, size, limit int) ([]got, error) {
	rd := NewReader(bufio.NewReaderSize(r, size), limit)
	var out []got
	for {
		ev, err := rd.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		g := got{Raw: string(ev.Raw), Name: string(ev.Name), Data: string(ev.Data)}
		if ev.Data == nil {
			g.Data = "<nil>"
		}
		out = append(out, g)
	}
}

func TestReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []got
	}{
		{"openai", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []got{
			{"data: {\"a\":1}\n\n", "", `{"a":1}`}, {"data: [DONE]\n\n", "", "[DONE]"}}},
		{"anthropic with names", "event: ping\ndata: {\"type\":\"ping\"}\n\nevent: message_stop\ndata: {}\n\n", []got{
			{"event: ping\ndata: {\"type\":\"ping\"}\n\n", "ping", `{"type":"ping"}`}, {"event: message_stop\ndata: {}\n\n", "message_stop", "{}"}}},
		{"crlf", "event: x\r\ndata: 1\r\n\r\n", []got{{"event: x\r\ndata: 1\r\n\r\n", "x", "1"}}},
		{"comment only", ": ping\n\n", []got{{": ping\n\n", "", "<nil>"}}},
		{"multi-line data", "data: a\ndata: b\n\n", []got{{"data: a\ndata: b\n\n", "", "a\nb"}}},
		{"no space after colon", "data:x\n\n", []got{{"data:x\n\n", "", "x"}}},
		{"missing final blank line", "data: a\n\ndata: [DONE]", []got{{"data: a\n\n", "", "a"}, {"data: [DONE]", "", "[DONE]"}}},
		{"leading blank lines", "\n\ndata: a\n\n", []got{{"data: a\n\n", "", "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := readAll(strings.NewReader(tt.in), 16, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out); diff != "" {
				t.Errorf("events mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEventTooLarge(t *testing.T) {
	t.Parallel()
	_, err := readAll(strings.NewReader("data: "+strings.Repeat("x", 5000)+"\n\n"), 16, 1024)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("err = %v, want ErrEventTooLarge", err)
	}
}

// FuzzSplits feeds the same stream split at random boundaries and checks
// that the events are the same as when it is read whole.
func FuzzSplits(f *testing.F) {
	f.Add([]byte("event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]"), []byte{1, 2, 3, 50, 7})
	f.Add([]byte("data: {}\n\n\n\ndata:\n\n"), []byte{0})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		want, werr := readAll(bytes.NewReader(stream), 1<<16, 1<<20)
		out, err := readAll(&wiretest.SplitReader{B: stream, Sizes: sizes}, 16, 1<<20)
		if (werr == nil) != (err == nil) {
			t.Fatalf("errors differ: whole %v, split %v", werr, err)
		}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("split reading differs (-whole +split):\n%s", diff)
		}
	})
}
