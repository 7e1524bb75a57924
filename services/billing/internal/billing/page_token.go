package billing

import "github.com/moat-ai/moat/libs/pagetoken"

// encodePageToken returns the token of the page after c. It carries the
// keyset position of the last entry returned, so that pages stay stable
// while new entries arrive at the head, and it is bound to parent (AIP-158).
func encodePageToken(parent string, c Cursor) string {
	c.RequestTime = c.RequestTime.UTC()
	return pagetoken.Encode(parent, c)
}

// decodePageToken returns the position in a token that encodePageToken
// issued for parent; any other token is a page_token ValidationError.
func decodePageToken(token, parent string) (Cursor, error) {
	var c Cursor
	if err := pagetoken.Decode(token, parent, &c); err != nil || c.RequestTime.IsZero() {
		return Cursor{}, &ValidationError{Field: "page_token", Reason: "not a page token of this list"}
	}
	return c, nil
}
