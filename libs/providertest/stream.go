package providertest

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client left; nothing to tell it
}

// sse writes a server-sent event stream, flushing each event so that the
// caller sees it when it is produced.
type sse struct {
	s   *Server
	w   http.ResponseWriter
	f   http.Flusher
	eol string // "\n", or "\r\n" for Gemini
	buf bytes.Buffer
}

// startSSE sends the 200 headers of an event stream.
func (s *Server) startSSE(w http.ResponseWriter, eol string) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	if f != nil {
		f.Flush()
	}
	return &sse{s: s, w: w, f: f, eol: eol}
}

// send writes one event: an `event:` line when event is set, and v as
// the `data:` line. A failed write means the caller went away; it is
// counted once, as the handler stops there.
func (e *sse) send(event string, v any) bool {
	data, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return e.sendData(event, data)
}

func (e *sse) sendData(event string, data []byte) bool {
	e.buf.Reset()
	if event != "" {
		e.buf.WriteString("event: " + event + e.eol)
	}
	e.buf.WriteString("data: ")
	e.buf.Write(data)
	e.buf.WriteString(e.eol + e.eol)
	return e.write(e.buf.Bytes())
}

func (e *sse) write(b []byte) bool {
	if _, err := e.w.Write(b); err != nil {
		e.s.canceled.Add(1)
		return false
	}
	if e.f != nil {
		e.f.Flush()
	}
	return true
}

// awsStream writes an AWS eventstream (application/vnd.amazon.eventstream),
// the binary framing of Bedrock's streaming APIs.
type awsStream struct {
	s   *Server
	w   http.ResponseWriter
	f   http.Flusher
	enc *eventstream.Encoder
}

// startAWSStream sends the 200 headers of an eventstream.
func (s *Server) startAWSStream(w http.ResponseWriter, requestID string) *awsStream {
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.Header().Set("X-Amzn-Requestid", requestID)
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	if f != nil {
		f.Flush()
	}
	return &awsStream{s: s, w: w, f: f, enc: eventstream.NewEncoder()}
}

// event writes one event message of type typ with v as its JSON payload.
func (e *awsStream) event(typ string, v any) bool {
	payload, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return e.write(eventstream.Message{
		Headers: eventstream.Headers{
			{Name: ":event-type", Value: eventstream.StringValue(typ)},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
		},
		Payload: payload,
	})
}

// exception writes an exception message, the way an eventstream ends in
// error once its headers are sent.
func (e *awsStream) exception(typ, message string) bool {
	payload, err := json.Marshal(map[string]string{"message": message})
	if err != nil {
		return false
	}
	return e.write(eventstream.Message{
		Headers: eventstream.Headers{
			{Name: ":exception-type", Value: eventstream.StringValue(typ)},
			{Name: ":content-type", Value: eventstream.StringValue("application/json")},
			{Name: ":message-type", Value: eventstream.StringValue("exception")},
		},
		Payload: payload,
	})
}

func (e *awsStream) write(m eventstream.Message) bool {
	if err := e.enc.Encode(e.w, m); err != nil {
		e.s.canceled.Add(1)
		return false
	}
	if e.f != nil {
		e.f.Flush()
	}
	return true
}
