package audit

import (
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// pageToken is the content of an opaque page token. It names the parent it
// was issued for, so that a token is not silently reused on another list
// (AIP-158), and the keyset position of the last record returned, so that
// pages stay stable while new records arrive at the head.
type pageToken struct {
	Parent    string    `json:"p"`
	EventTime time.Time `json:"t"`
	EventID   uuid.UUID `json:"e"`
}

func encodePageToken(parent string, c Cursor) string {
	b, err := json.Marshal(pageToken{Parent: parent, EventTime: c.EventTime.UTC(), EventID: c.EventID})
	if err != nil {
		panic(err) // a struct of strings, a time and a UUID always encodes
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(token, parent string) (Cursor, error) {
	invalid := &ValidationError{Field: "page_token", Reason: "not a page token of this list"}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, invalid
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || t.Parent != parent || t.EventTime.IsZero() {
		return Cursor{}, invalid
	}
	return Cursor{EventTime: t.EventTime, EventID: t.EventID}, nil
}
