package gateway

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/tiktoken-go/tokenizer"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/anthropic"
)

// HeaderTokenCount says how a count_tokens answer was made: "provider"
// when the upstream counted, "estimate" when the gateway did.
const HeaderTokenCount = "Moat-Token-Count" //nolint:gosec // a header name, not a credential

// Per-part allowances of the local estimate, for what a text tokenizer
// cannot see: an image of unknown size (Anthropic's 1092×1092 limit is
// about 1 600 tokens), a document page budget, and the framing of each
// message.
const (
	estimateImage    = 1600
	estimateDocument = 3000
	estimateMessage  = 4
)

// localPath answers a call itself, without a provider.
type localPath interface {
	answer(w http.ResponseWriter, c *Call)
}

// countLocal answers count_tokens for a provider that cannot count
// (OpenAI-compatible servers have no such endpoint) with an estimate from
// an offline tokenizer, marked as such. It is never on the billable path.
type countLocal struct{}

var (
	tokenizerOnce sync.Once
	tokenizerEnc  tokenizer.Codec
	tokenizerErr  error
)

// estimator returns the shared o200k tokenizer, loaded from the
// vocabulary embedded in the binary at first use (no download: the
// gateway runs air-gapped).
func estimator() (tokenizer.Codec, error) {
	tokenizerOnce.Do(func() { tokenizerEnc, tokenizerErr = tokenizer.Get(tokenizer.O200kBase) })
	return tokenizerEnc, tokenizerErr
}

func (countLocal) answer(w http.ResponseWriter, c *Call) {
	r, err := anthropic.DecodeCountTokens(c.Body)
	if err != nil {
		g := requestRefusal(err)
		c.status = g.Status
		renderCount(w, c, -1, g)
		return
	}
	enc, err := estimator()
	if err != nil {
		renderCount(w, c, -1, &Refusal{Status: http.StatusInternalServerError, Type: TypeAPI, Code: CodeInternal, Gate: GateUpstream,
			Message: "The gateway cannot estimate token counts."})
		return
	}
	n := estimateTokens(enc, r)
	renderCount(w, c, n, nil)
}

// renderCount writes {"input_tokens": n}, or d through the client's
// renderer.
func renderCount(w http.ResponseWriter, c *Call, n int64, d *Refusal) {
	if d != nil {
		c.refuse(w, d)
		return
	}
	b := strconv.AppendInt([]byte(`{"input_tokens":`), n, 10)
	b = append(b, '}')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderTokenCount, "estimate")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	c.status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // a failed write means the client left
}

// estimateTokens counts the text of r (system, messages, tool inputs and
// results, tool definitions) with enc, plus allowances for media and
// message framing.
func estimateTokens(enc tokenizer.Codec, r *ir.Request) int64 {
	var n int64
	count := func(s string) {
		if s == "" {
			return
		}
		k, err := enc.Count(s)
		if err != nil {
			k = len(s) // never undercount: a byte-level BPE token is at least one byte
		}
		n += int64(k)
	}
	var blocks func([]ir.Block)
	blocks = func(bs []ir.Block) {
		for _, b := range bs {
			switch b.Type {
			case ir.BlockImage:
				n += estimateImage
			case ir.BlockDocument:
				n += estimateDocument
			}
			count(b.Text)
			count(b.Name)
			count(string(b.Input))
			blocks(b.Content)
		}
	}
	blocks(r.System)
	for _, m := range r.Messages {
		n += estimateMessage
		blocks(m.Content)
	}
	for _, t := range r.Tools {
		count(t.Name)
		count(t.Description)
		count(string(t.Schema))
	}
	return n
}

// countLocal is in the path table but never calls a provider: the
// gateway answers through localPath before any of these is reached.
func (countLocal) native() bool { return false }

func (countLocal) request(*Call) ([]byte, *Refusal) { return nil, errLocal }

func (countLocal) whole(*Call, []byte) ([]byte, *Refusal) { return nil, errLocal }

func (countLocal) upstreamError(*Call, int, []byte) ([]byte, *Refusal) { return nil, errLocal }

func (countLocal) stream(*Call) streamer { return nil }

var errLocal = &Refusal{Status: http.StatusInternalServerError, Type: TypeAPI, Code: CodeInternal, Gate: GateUpstream, Message: "internal error"}
