package awsstream

import (
	"strings"

	"github.com/moat-ai/moat/services/gateway/internal/ir"
	"github.com/moat-ai/moat/services/gateway/internal/wire/jsonx"
)

// DecodeError reads an AWS error as Bedrock sends it, whatever the API
// (Converse or InvokeModel): a non-streamed answer's body,
// {"message": ...} with the type in the X-Amzn-ErrorType header (passed
// as errorType), or the payload of a stream's exception frame with the
// frame's :exception-type. The type is normalized as AWS's JSON protocol
// says (a namespace before '#' and details after ':' are cut) and
// capitalized, so that ThrottlingException reads the same from a header
// and from a stream's throttlingException; when errorType is empty the
// body's __type or code names it. ThrottlingException and
// ServiceUnavailableException are Overloaded: another attempt, here or at
// a fallback, may succeed. ok is false when neither a type nor a message
// was found.
func DecodeError(body []byte, errorType string) (e ir.ProviderError, ok bool) {
	var bodyType string
	_, _ = jsonx.Object(body, func(m jsonx.Member) error { // a body that is not an object has no message
		v := body[m.Start:m.End]
		if v[0] != '"' {
			return nil
		}
		// A string that does not unquote leaves its field empty: the
		// error is then described by what else the answer holds.
		switch {
		case m.Is("message"), m.Is("Message"):
			e.Message, _ = jsonx.Unquote(v)
		case m.Is("__type"), m.Is("code"):
			bodyType, _ = jsonx.Unquote(v)
		}
		return nil
	})
	if errorType == "" {
		errorType = bodyType
	}
	e.Type = errorTypeName(errorType)
	switch e.Type {
	case "ThrottlingException", "ServiceUnavailableException":
		e.Overloaded = true
	}
	return e, e.Type != "" || e.Message != ""
}

// errorTypeName normalizes an AWS error type:
// "aws.protocoljson#ThrottlingException:http://..." is
// ThrottlingException.
func errorTypeName(t string) string {
	if i := strings.IndexByte(t, ':'); i >= 0 {
		t = t[:i]
	}
	if i := strings.LastIndexByte(t, '#'); i >= 0 {
		t = t[i+1:]
	}
	t = strings.TrimSpace(t)
	if t != "" && t[0] >= 'a' && t[0] <= 'z' {
		t = string(t[0]-'a'+'A') + t[1:]
	}
	return bound(t)
}
