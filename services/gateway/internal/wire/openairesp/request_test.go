package openairesp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/moat-ai/moat/services/gateway/internal/wire"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

func TestParseRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       Request
	}{
		{"string input", `{"model":"gpt-4.1","input":"hi"}`, Request{Model: "gpt-4.1"}},
		{"items, stream, bound", `{"input":[{"role":"user","content":"hi"}],"stream":true,"model":"m","max_output_tokens":64,"instructions":"x"}`,
			Request{Model: "m", Stream: true, MaxOutputTokens: 64}},
		{"nulls", `{"model":"m","input":"a","stream":null,"instructions":null,"max_output_tokens":null}`, Request{Model: "m"}},
		{"escaped key", `{"mod\u0065l":"m","input":"a"}`, Request{Model: "m"}},
		{"previous response instead of input", `{"model":"m","previous_response_id":"resp_1"}`, Request{Model: "m"}},
		{"stored prompt instead of input", `{"model":"m","prompt":{"id":"pmpt_1"}}`, Request{Model: "m"}},
		{"conversation instead of input", `{"model":"m","conversation":"conv_1","stream":false}`, Request{Model: "m"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseRequest(%s) = %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Request{})); diff != "" {
				t.Errorf("ParseRequest(%s) mismatch (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestParseRequestErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("m", wire.MaxModel+1)
	tests := []struct {
		name, body string
		want       *wire.RequestError
	}{
		{"not JSON", `{"model":`, ErrMalformed},
		{"not an object", `["model"]`, ErrMalformed},
		{"trailing bytes", `{"model":"m","input":"a"} x`, ErrMalformed},
		{"too deep", `{"model":"m","input":` + strings.Repeat("[", jsonx.MaxDepth+1) + strings.Repeat("]", jsonx.MaxDepth+1) + `}`, ErrNested},
		{"no model", `{"input":"a"}`, ErrNoModel},
		{"null model", `{"model":null,"input":"a"}`, ErrNoModel},
		{"model type", `{"model":7,"input":"a"}`, ErrModelType},
		{"model too long", `{"model":"` + long + `","input":"a"}`, wire.ErrModelTooLong},
		{"no input", `{"model":"m"}`, ErrNoInput},
		{"null input", `{"model":"m","input":null}`, ErrNoInput},
		{"null previous response", `{"model":"m","previous_response_id":null}`, ErrNoInput},
		{"input type", `{"model":"m","input":{"role":"user"}}`, ErrInputType},
		{"instructions type", `{"model":"m","input":"a","instructions":["x"]}`, ErrInstructionsType},
		{"max_output_tokens fraction", `{"model":"m","input":"a","max_output_tokens":1.5}`, ErrMaxOutputType},
		{"max_output_tokens zero", `{"model":"m","input":"a","max_output_tokens":0}`, ErrMaxOutputType},
		{"max_output_tokens string", `{"model":"m","input":"a","max_output_tokens":"9"}`, ErrMaxOutputType},
		{"stream type", `{"model":"m","input":"a","stream":"yes"}`, ErrStreamType},
		{"duplicate model", `{"model":"cheap","input":"a","model":"dear"}`, ErrDuplicateName},
		{"duplicate escaped model", `{"model":"cheap","input":"a","m\u006fdel":"dear"}`, ErrDuplicateName},
		{"duplicate input", `{"model":"m","input":"a","input":[]}`, ErrDuplicateName},
		{"duplicate instructions", `{"model":"m","input":"a","instructions":"a","instructions":"b"}`, ErrDuplicateName},
		{"duplicate bound", `{"model":"m","input":"a","max_output_tokens":1,"max_output_tokens":100000}`, ErrDuplicateName},
		{"duplicate stream", `{"model":"m","input":"a","stream":false,"stream":true}`, ErrDuplicateName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRequest([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Errorf("ParseRequest(%.80s) = %v, want %v", tt.body, err, tt.want)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"model":"alias","input":"hi","stream":true}`, `{"model":"gpt-4.1-2025-04-14","input":"hi","stream":true}`},
		{` { "input" : [ ] , "model" : "alias" } `, ` { "input" : [ ] , "model" : "gpt-4.1-2025-04-14" } `},
		{`{"m\u006fdel":"alias","input":"hi"}`, `{"m\u006fdel":"gpt-4.1-2025-04-14","input":"hi"}`},
	}
	for _, tt := range tests {
		req, err := ParseRequest([]byte(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(req.Rewrite([]byte(tt.body), []byte(`"gpt-4.1-2025-04-14"`))); got != tt.want {
			t.Errorf("Rewrite(%s) = %s, want %s", tt.body, got, tt.want)
		}
	}
}

// FuzzParseRequest checks that no body panics the scanner, that an
// accepted body keeps being accepted once rewritten, with the new model
// and every other byte as it came.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"x"}]}],"stream":true,"max_output_tokens":9}`,
		`{"model":"m","previous_response_id":"resp_1","instructions":null}`,
		`{"model":"m","input":"a","model":"b"}`,
		`{"m\u006fdel":"m","input":[]}`,
		`{"model":"m","input":"\ud83d\ude00","stream":false}`,
	} {
		f.Add([]byte(s))
	}
	for _, in := range goldenInputs(f, "requests", "*.in.json") {
		f.Add(readFile(f, in))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseRequest(body)
		if err != nil {
			var re *wire.RequestError
			if !errors.As(err, &re) {
				t.Fatalf("ParseRequest error %T %v, want a *wire.RequestError", err, err)
			}
			return
		}
		if req.Model == "" || len(req.Model) > wire.MaxModel {
			t.Fatalf("ParseRequest accepted model %q", req.Model)
		}
		out := req.Rewrite(body, []byte(`"upstream"`))
		again, err := ParseRequest(out)
		if err != nil {
			t.Fatalf("rewritten body %s does not parse: %v", out, err)
		}
		if again.Model != "upstream" || again.Stream != req.Stream || again.MaxOutputTokens != req.MaxOutputTokens {
			t.Fatalf("rewritten body reads %+v, want model upstream and %+v", again, req)
		}
		if !bytes.Equal(out[:req.modelStart], body[:req.modelStart]) || !bytes.Equal(out[req.modelStart+len(`"upstream"`):], body[req.modelEnd:]) {
			t.Fatalf("Rewrite changed more than the model:\n%s\n%s", body, out)
		}
	})
}
