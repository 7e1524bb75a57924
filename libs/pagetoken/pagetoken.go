// Package pagetoken encodes the opaque page tokens of List methods
// (AIP-158). A token carries the list's parent and the position the next
// page starts after, so that a token issued for one list is refused by
// another instead of silently selecting the wrong rows.
//
// Tokens are not signed: a caller can forge one. That is harmless as long
// as the service authorizes the parent on every call, as it must anyway,
// and validates the position it decodes.
package pagetoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrInvalid reports a token that Encode did not issue for the list at
// hand: malformed, truncated, or issued for another parent. Services map it
// to their own validation error on the page_token field.
var ErrInvalid = errors.New("not a page token of this list")

// token is the decoded form. The single-letter names keep tokens short in
// URLs.
type token struct {
	Parent   string          `json:"p"`
	Position json.RawMessage `json:"c"`
}

// Encode returns the token of the page of parent's list that starts after
// position. position is any JSON-encodable value; Encode panics if it is
// not, which is a programmer error, not a runtime condition.
func Encode(parent string, position any) string {
	pos, err := json.Marshal(position)
	if err != nil {
		panic(fmt.Sprintf("pagetoken: position %T does not encode: %v", position, err))
	}
	b, err := json.Marshal(token{Parent: parent, Position: pos})
	if err != nil {
		panic(fmt.Sprintf("pagetoken: encode token: %v", err)) // a string and valid JSON always encode
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode reads the position of tok, which must have been issued by Encode
// for parent, into position (a pointer, as for json.Unmarshal). Every
// failure wraps ErrInvalid. An empty tok is invalid too: callers treat ""
// as the first page before calling Decode.
func Decode(tok, parent string, position any) error {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return fmt.Errorf("%w: not base64url", ErrInvalid)
	}
	var t token
	if err := json.Unmarshal(b, &t); err != nil {
		return fmt.Errorf("%w: malformed", ErrInvalid)
	}
	if t.Parent != parent {
		return fmt.Errorf("%w: issued for another parent", ErrInvalid)
	}
	if len(t.Position) == 0 || string(t.Position) == "null" {
		return fmt.Errorf("%w: no position", ErrInvalid)
	}
	if err := json.Unmarshal(t.Position, position); err != nil {
		return fmt.Errorf("%w: malformed position", ErrInvalid)
	}
	return nil
}
