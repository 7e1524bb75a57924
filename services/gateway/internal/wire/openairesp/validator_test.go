package openairesp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/wire/sse"
)

// validation says how strictly validateStream checks a stream.
type validation struct {
	// Complete requires the stream to reach its end: response.completed,
	// response.incomplete, response.failed or an error event.
	Complete bool
	// ToolJSON requires a function call's arguments to be valid JSON:
	// true for streams we wrote from well-formed sources.
	ToolJSON bool
	// SDK decodes every event with openai-go and checks its required
	// members (streams we wrote; the mock and the hand-written native
	// fixtures carry only the members their clients read).
	SDK bool
}

// openItem is the output item a stream has open.
type openItem struct {
	id, typ, callID, name string
	index                 int
	parts                 []string // the finished content or summary parts
	partOpen, textDone    bool
	text                  strings.Builder // the open part's text, or the arguments
	argsDone              bool
}

// validateStream checks b against the Responses stream grammar the SDKs
// read: every event named, its data a one-line JSON object of that type
// with a sequence_number, from 0 and one more each time; response.created
// first (an error event may stand alone), with the response's id kept
// throughout; output items one at a time with output indices from 0 and
// unique ids, each output_item.added, its parts (content_part.added,
// output_text deltas and done, content_part.done; or summary parts; or
// function_call_arguments deltas and done) and output_item.done with the
// whole item, equal to what its deltas built; last response.completed or
// response.incomplete, whose output is the items done, in order, and
// whose usage adds up; or response.failed, or an error event, ending the
// stream anywhere.
func validateStream(b []byte, v validation) error {
	rd := sse.NewReader(bufio.NewReader(bytes.NewReader(b)), 1<<24)
	var (
		n        int
		ended    string
		respID   string
		ids      = map[string]bool{}
		done     []any
		open     *openItem
		progress bool
	)
	for ; ; n++ {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("event %d: %w", n, err)
		}
		at := func(format string, args ...any) error {
			return fmt.Errorf("event %d (%s): %s", n, ev.Name, fmt.Sprintf(format, args...))
		}
		if ended != "" {
			return at("event after %s", ended)
		}
		if len(ev.Name) == 0 || ev.Data == nil {
			return at("an event needs a name and data: %q", ev.Raw)
		}
		if bytes.IndexByte(ev.Data, '\n') >= 0 {
			return at("data spans several lines")
		}
		var d map[string]any
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return at("data is not a JSON object: %v", err)
		}
		name := string(ev.Name)
		if d["type"] != name {
			return at("data type %v differs from the event name", d["type"])
		}
		if d["sequence_number"] != float64(n) {
			return at("sequence_number %v, want %d", d["sequence_number"], n)
		}
		if v.SDK {
			if _, err := sdkEvent(ev.Data); err != nil {
				return at("the SDK refuses it: %v", err)
			}
		}
		if n == 0 && name != typeCreated && name != typeErrorEvent {
			return at("the first event must be response.created")
		}
		// ref checks the item_id and output_index of an event about the
		// open item, of type typ.
		ref := func(typ string) error {
			switch {
			case open == nil:
				return at("no item is open")
			case open.typ != typ:
				return at("the open item is a %s, not a %s", open.typ, typ)
			case d["item_id"] != open.id || d["output_index"] != float64(open.index):
				return at("item %v at %v, open item %s at %d", d["item_id"], d["output_index"], open.id, open.index)
			}
			return nil
		}
		// part checks an event about the open part (content_index or
		// summary_index key).
		part := func(typ, key string, wantOpen bool) error {
			if err := ref(typ); err != nil {
				return err
			}
			switch {
			case d[key] != float64(len(open.parts)):
				return at("%s %v, want %d", key, d[key], len(open.parts))
			case open.partOpen != wantOpen:
				return at("part open %v, want %v", open.partOpen, wantOpen)
			}
			return nil
		}
		str := func(m map[string]any, k string) (string, error) {
			s, ok := m[k].(string)
			if !ok {
				return "", at("%s is %T, want a string", k, m[k])
			}
			return s, nil
		}
		switch name {
		case typeCreated, typeInProgress:
			if (name == typeCreated && n != 0) || (name == typeInProgress && (progress || len(ids) > 0)) {
				return at("out of place")
			}
			progress = progress || name == typeInProgress
			r, err := checkResponse(d["response"], "in_progress", respID)
			if err != nil {
				return at("%v", err)
			}
			if len(r["output"].([]any)) != 0 {
				return at("output before any item")
			}
			respID = r["id"].(string)
		case typeItemAdded:
			item, _ := d["item"].(map[string]any)
			switch {
			case open != nil:
				return at("item %s still open", open.id)
			case d["output_index"] != float64(len(done)):
				return at("output_index %v, want %d", d["output_index"], len(done))
			case item == nil:
				return at("no item")
			}
			id, _ := item["id"].(string)
			typ, _ := item["type"].(string)
			if id == "" || ids[id] {
				return at("item id %q empty or not unique", id)
			}
			ids[id] = true
			open = &openItem{id: id, typ: typ, index: len(done)}
			switch typ {
			case "message":
				if item["role"] != "assistant" || item["status"] != "in_progress" || !emptyList(item["content"]) {
					return at("message item %v, want an in-progress assistant message without content", item)
				}
			case "reasoning":
				if !emptyList(item["summary"]) {
					return at("reasoning item %v, want an empty summary", item)
				}
			case "function_call":
				open.callID, _ = item["call_id"].(string)
				open.name, _ = item["name"].(string)
				if open.callID == "" || open.name == "" || item["arguments"] != "" || item["status"] != "in_progress" {
					return at("function_call item %v, want call_id, name, empty arguments, in progress", item)
				}
			default:
				return at("item type %q", typ)
			}
		case typePartAdded, typeSummaryAdded:
			typ, key, partType := "message", "content_index", "output_text"
			if name == typeSummaryAdded {
				typ, key, partType = "reasoning", "summary_index", "summary_text"
			}
			if err := part(typ, key, false); err != nil {
				return err
			}
			p, _ := d["part"].(map[string]any)
			if p["type"] != partType || p["text"] != "" {
				return at("part %v, want an empty %s", p, partType)
			}
			if partType == "output_text" && !emptyList(p["annotations"]) {
				return at("part %v without annotations []", p)
			}
			open.partOpen, open.textDone = true, false
			open.text.Reset()
		case typeTextDelta, typeSummaryTextDelta:
			typ, key := "message", "content_index"
			if name == typeSummaryTextDelta {
				typ, key = "reasoning", "summary_index"
			}
			if err := part(typ, key, true); err != nil {
				return err
			}
			if open.textDone {
				return at("delta after the text was done")
			}
			s, err := str(d, "delta")
			if err != nil {
				return err
			}
			if name == typeTextDelta {
				if _, ok := d["logprobs"].([]any); !ok {
					return at("no logprobs list")
				}
			}
			open.text.WriteString(s)
		case typeTextDone, typeSummaryTextDone:
			typ, key := "message", "content_index"
			if name == typeSummaryTextDone {
				typ, key = "reasoning", "summary_index"
			}
			if err := part(typ, key, true); err != nil {
				return err
			}
			if s, err := str(d, "text"); err != nil {
				return err
			} else if s != open.text.String() || open.textDone {
				return at("text %q, deltas gave %q (done before: %v)", s, open.text.String(), open.textDone)
			}
			open.textDone = true
		case typePartDone, typeSummaryDone:
			typ, key, partType := "message", "content_index", "output_text"
			if name == typeSummaryDone {
				typ, key, partType = "reasoning", "summary_index", "summary_text"
			}
			if err := part(typ, key, true); err != nil {
				return err
			}
			p, _ := d["part"].(map[string]any)
			if !open.textDone || p["type"] != partType || p["text"] != open.text.String() {
				return at("part %v, want the %s %q after its text was done", p, partType, open.text.String())
			}
			open.parts = append(open.parts, open.text.String())
			open.partOpen = false
		case typeArgsDelta:
			if err := ref("function_call"); err != nil {
				return err
			}
			s, err := str(d, "delta")
			if err != nil {
				return err
			}
			if open.argsDone {
				return at("arguments delta after they were done")
			}
			open.text.WriteString(s)
		case typeArgsDone:
			if err := ref("function_call"); err != nil {
				return err
			}
			s, err := str(d, "arguments")
			if err != nil {
				return err
			}
			if s != open.text.String() || open.argsDone {
				return at("arguments %q, deltas gave %q (done before: %v)", s, open.text.String(), open.argsDone)
			}
			if v.ToolJSON && !json.Valid([]byte(s)) {
				return at("arguments %q are not JSON", s)
			}
			open.argsDone = true
		case typeItemDone:
			item, _ := d["item"].(map[string]any)
			switch {
			case open == nil:
				return at("no item open")
			case d["output_index"] != float64(open.index) || item["id"] != open.id || item["type"] != open.typ:
				return at("item %v at %v, open %s %s at %d", item["id"], d["output_index"], open.typ, open.id, open.index)
			case open.partOpen:
				return at("a part is still open")
			}
			if err := checkDoneItem(item, open); err != nil {
				return at("%v", err)
			}
			done = append(done, item)
			open = nil
		case typeCompleted, typeIncomplete, typeFailed:
			want := strings.TrimPrefix(name, "response.")
			if open != nil && name != typeFailed {
				return at("item %s still open", open.id)
			}
			r, err := checkResponse(d["response"], want, respID)
			if err != nil {
				return at("%v", err)
			}
			if name != typeFailed {
				if !reflect.DeepEqual(r["output"], any(done)) && (len(done) != 0 || !emptyList(r["output"])) {
					out, _ := json.Marshal(r["output"])
					items, _ := json.Marshal(done)
					return at("output %s differs from the items done %s", out, items)
				}
				if err := checkUsage(r["usage"]); err != nil {
					return at("%v", err)
				}
			}
			ended = name
		case typeErrorEvent:
			if _, err := str(d, "code"); err != nil {
				return err
			}
			if _, err := str(d, "message"); err != nil {
				return err
			}
			if _, ok := d["param"]; !ok {
				return at("no param member")
			}
			ended = name
		default:
			return at("unknown event")
		}
	}
	if v.Complete && ended == "" {
		return fmt.Errorf("stream of %d events ends without its terminal event", n)
	}
	return nil
}

func emptyList(x any) bool {
	l, ok := x.([]any)
	return ok && len(l) == 0
}

// checkResponse checks a response object of the status wanted, whose id
// is id when set.
func checkResponse(x any, status, id string) (map[string]any, error) {
	r, ok := x.(map[string]any)
	if !ok {
		return nil, errors.New("no response object")
	}
	rid, _ := r["id"].(string)
	_, isList := r["output"].([]any)
	switch {
	case !strings.HasPrefix(rid, "resp_") || (id != "" && rid != id):
		return nil, fmt.Errorf("response id %q (want %q)", rid, id)
	case r["object"] != "response" || r["status"] != status:
		return nil, fmt.Errorf("object %v status %v, want response %s", r["object"], r["status"], status)
	case !isList:
		return nil, errors.New("response without an output list")
	}
	if _, ok := r["created_at"].(float64); !ok {
		return nil, errors.New("response without created_at")
	}
	if m, _ := r["model"].(string); m == "" {
		return nil, errors.New("response without a model")
	}
	if status == "incomplete" {
		det, _ := r["incomplete_details"].(map[string]any)
		if reason, _ := det["reason"].(string); reason == "" {
			return nil, fmt.Errorf("incomplete response without a reason: %v", r["incomplete_details"])
		}
	}
	return r, nil
}

// checkDoneItem checks an item at its output_item.done against what its
// events built.
func checkDoneItem(item map[string]any, open *openItem) error {
	var texts []string
	switch open.typ {
	case "message":
		if item["role"] != "assistant" || (item["status"] != "completed" && item["status"] != "incomplete") {
			return fmt.Errorf("message item %v, want a finished assistant message", item)
		}
		content, _ := item["content"].([]any)
		for _, c := range content {
			p, _ := c.(map[string]any)
			s, _ := p["text"].(string)
			if p["type"] != "output_text" || !emptyList(p["annotations"]) {
				return fmt.Errorf("content part %v", p)
			}
			texts = append(texts, s)
		}
	case "reasoning":
		summary, _ := item["summary"].([]any)
		for _, c := range summary {
			p, _ := c.(map[string]any)
			s, _ := p["text"].(string)
			if p["type"] != "summary_text" {
				return fmt.Errorf("summary part %v", p)
			}
			texts = append(texts, s)
		}
	case "function_call":
		switch {
		case !open.argsDone:
			return errors.New("function call done before its arguments")
		case item["arguments"] != open.text.String() || item["call_id"] != open.callID || item["name"] != open.name:
			return fmt.Errorf("function_call item %v, want call_id %s, name %s, arguments %q", item, open.callID, open.name, open.text.String())
		case item["status"] != "completed" && item["status"] != "incomplete":
			return fmt.Errorf("function_call status %v", item["status"])
		}
		return nil
	}
	if !reflect.DeepEqual(texts, open.parts) && (len(texts) != 0 || len(open.parts) != 0) {
		return fmt.Errorf("item parts %q, events gave %q", texts, open.parts)
	}
	return nil
}

// checkUsage checks a usage object: non-negative integers whose total
// adds up, the cached within the input and the reasoning within the
// output.
func checkUsage(x any) error {
	u, ok := x.(map[string]any)
	if !ok {
		return fmt.Errorf("usage %v, want an object", x)
	}
	num := func(m map[string]any, k string) (float64, error) {
		n, ok := m[k].(float64)
		if !ok || n < 0 || n != float64(int64(n)) {
			return 0, fmt.Errorf("usage %s = %v", k, m[k])
		}
		return n, nil
	}
	in, err := num(u, "input_tokens")
	if err != nil {
		return err
	}
	out, err := num(u, "output_tokens")
	if err != nil {
		return err
	}
	total, err := num(u, "total_tokens")
	if err != nil {
		return err
	}
	if total != in+out {
		return fmt.Errorf("usage total %v, want %v", total, in+out)
	}
	inDet, _ := u["input_tokens_details"].(map[string]any)
	outDet, _ := u["output_tokens_details"].(map[string]any)
	cached, err := num(inDet, "cached_tokens")
	if err != nil {
		return err
	}
	reasoning, err := num(outDet, "reasoning_tokens")
	if err != nil {
		return err
	}
	if cached > in || reasoning > out {
		return fmt.Errorf("usage cached %v of %v input, reasoning %v of %v output", cached, in, reasoning, out)
	}
	return nil
}
