package pagetoken_test

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/pagetoken"
)

type position struct {
	Time time.Time `json:"t"`
	ID   string    `json:"i"`
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		parent   string
		position any
		decode   func(tok, parent string) (any, error)
	}{
		{"struct", "orgs/acme", position{Time: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), ID: "0190b0a4-7c2e-7000-8000-000000000001"},
			func(tok, parent string) (any, error) {
				var p position
				err := pagetoken.Decode(tok, parent, &p)
				return p, err
			}},
		{"string", "orgs/acme/projects/web", "0190b0a4-7c2e-7000-8000-000000000001",
			func(tok, parent string) (any, error) {
				var s string
				err := pagetoken.Decode(tok, parent, &s)
				return s, err
			}},
		{"empty parent", "", "after",
			func(tok, parent string) (any, error) {
				var s string
				err := pagetoken.Decode(tok, parent, &s)
				return s, err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := pagetoken.Encode(tt.parent, tt.position)
			got, err := tt.decode(tok, tt.parent)
			if err != nil {
				t.Fatalf("Decode(Encode(%q, %v)) = %v", tt.parent, tt.position, err)
			}
			if diff := cmp.Diff(tt.position, got); diff != "" {
				t.Errorf("position mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	t.Parallel()
	tok := pagetoken.Encode("orgs/acme", position{ID: "x"})
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, token, parent string
	}{
		{"another parent", tok, "orgs/other"},
		{"a child of the parent", tok, "orgs/acme/projects/web"},
		{"empty", "", "orgs/acme"},
		{"not base64url", "not base64!", "orgs/acme"},
		{"padded base64", tok + "=", "orgs/acme"},
		{"truncated", tok[:len(tok)-3], "orgs/acme"},
		{"not JSON", raw("not a token"), "orgs/acme"},
		{"empty object", raw("{}"), "orgs/acme"},
		{"no position", raw(`{"p":"orgs/acme"}`), "orgs/acme"},
		{"null position", raw(`{"p":"orgs/acme","c":null}`), "orgs/acme"},
		{"position of another shape", raw(`{"p":"orgs/acme","c":"a string"}`), "orgs/acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var p position
			if err := pagetoken.Decode(tt.token, tt.parent, &p); !errors.Is(err, pagetoken.ErrInvalid) {
				t.Errorf("Decode(%q, %q) = %v, want ErrInvalid", tt.token, tt.parent, err)
			}
		})
	}
}

func TestEncodePanicsOnAnUnencodablePosition(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Encode(a channel) did not panic")
		}
	}()
	pagetoken.Encode("orgs/acme", make(chan int))
}
