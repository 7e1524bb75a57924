package openai

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
)

// streamBufferSize is the read buffer of a relayed stream. An SSE line
// longer than this is relayed in pieces (and not inspected for usage,
// which no usage chunk comes near).
const streamBufferSize = 32 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, streamBufferSize) }}

func isEventStream(contentType string) bool {
	if strings.HasPrefix(contentType, "text/event-stream") {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

var (
	dataPrefix = []byte("data:")
	usageKey   = []byte(`"usage"`)
)

// relayStream forwards a provider's SSE stream line by line as it
// arrives, flushing at the end of every event and whenever no more input
// is at hand, so that nothing waits in a buffer. It reads the usage from
// the chunk that carries it as that chunk passes. When the gateway, not
// the client, asked for usage (include_usage), the usage-only final chunk
// is kept from the client, who did not ask for it.
func (h *Handler) relayStream(w http.ResponseWriter, r *http.Request, ctx context.Context, c *call, body io.Reader, clientUsage bool) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // no proxy in front may buffer either
	c.status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		// Without flushing, streaming degrades to buffering; go on
		// regardless, the bytes still arrive.
		rc = nil
	}
	flush := func() bool { return rc == nil || rc.Flush() == nil }

	br := readerPool.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()

	var (
		partial   bool // inside a line longer than the buffer
		skipBlank bool // the event being dropped ends at the next blank line
	)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			whole := !partial && !errors.Is(err, bufio.ErrBufferFull)
			partial = errors.Is(err, bufio.ErrBufferFull)
			drop := false
			if whole {
				content := bytes.TrimRight(line, "\r\n")
				switch {
				case len(content) == 0:
					drop, skipBlank = skipBlank, false
				case bytes.HasPrefix(content, dataPrefix):
					drop = h.inspectChunk(c, content[len(dataPrefix):], clientUsage)
					skipBlank = drop
				}
			}
			if !drop {
				if _, werr := w.Write(line); werr != nil {
					return // the client went away; the deferred cancel stops the provider call
				}
			}
			blank := whole && len(bytes.TrimRight(line, "\r\n")) == 0
			if (blank || br.Buffered() == 0) && !flush() {
				return
			}
		}
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if !errors.Is(err, io.EOF) && r.Context().Err() == nil {
			// The answer has started; the status is sent. The client sees
			// the stream end early, and the log says why.
			what := "provider stream broke"
			if timedOut(ctx, err) {
				what = "provider stream went silent"
			}
			h.o.Log.Warn(what, "request_id", c.id.String(), "provider", c.route.Provider.Name, "err", err)
		}
		_ = flush() // best effort: the stream is ending on an error already
		return
	}
}

// inspectChunk reads the usage from an SSE data payload and reports
// whether the chunk must be kept from the client (the usage-only chunk the
// client did not ask for). Chunks without a "usage" key are not parsed.
func (h *Handler) inspectChunk(c *call, payload []byte, clientUsage bool) (drop bool) {
	if len(payload) > 0 && payload[0] == ' ' {
		payload = payload[1:]
	}
	if len(payload) == 0 || payload[0] != '{' || !bytes.Contains(payload, usageKey) {
		return false
	}
	u, emptyChoices := readUsage(payload)
	if !u.found {
		return false
	}
	c.usage = u
	return emptyChoices && !clientUsage
}
