package billing

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestParseScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		want    Scope
		wantErr bool
	}{
		{"orgs/acme", Scope{Organization: "orgs/acme"}, false},
		{"orgs/acme/projects/web-1", Scope{Organization: "orgs/acme", Project: "orgs/acme/projects/web-1"}, false},
		{"", Scope{}, true},
		{"orgs/", Scope{}, true},
		{"orgs/ac", Scope{}, true},
		{"orgs/Acme", Scope{}, true},
		{"orgs/acme/", Scope{}, true},
		{"orgs/acme/projects", Scope{}, true},
		{"orgs/acme/providers/p-1", Scope{}, true},
		{"orgs/acme/projects/web/usage", Scope{}, true},
		{"orgs/%/projects/web", Scope{}, true},
		{"projects/web", Scope{}, true},
	}
	for _, tt := range tests {
		got, err := ParseScope("parent", tt.name)
		var verr *ValidationError
		if tt.wantErr != (err != nil) || (err != nil && (!errors.As(err, &verr) || verr.Field != "parent")) {
			t.Errorf("ParseScope(%q) error = %v, want error %v on parent", tt.name, err, tt.wantErr)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseScope(%q) mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestPageToken(t *testing.T) {
	t.Parallel()
	c := Cursor{RequestTime: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), EventID: uuid.Must(uuid.NewV7())}
	tok := encodePageToken("orgs/acme", c)
	got, err := decodePageToken(tok, "orgs/acme")
	if err != nil {
		t.Fatalf("decodePageToken(encodePageToken(c)) = %v", err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("page token round trip mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []struct{ token, parent string }{
		{tok, "orgs/other"},
		{tok, "orgs/acme/projects/web"},
		{"not base64!", "orgs/acme"},
		{"e30", "orgs/acme"}, // {}
		{tok[:len(tok)-3], "orgs/acme"},
	} {
		var verr *ValidationError
		if _, err := decodePageToken(bad.token, bad.parent); !errors.As(err, &verr) || verr.Field != "page_token" {
			t.Errorf("decodePageToken(%q, %q) = %v, want a page_token ValidationError", bad.token, bad.parent, err)
		}
	}
}

// fakeStore returns canned entries and records what it was asked.
type fakeStore struct {
	entries []Entry
	after   *Cursor
	limit   int
}

func (f *fakeStore) ListEntries(_ context.Context, _ Scope, after *Cursor, limit int) ([]Entry, error) {
	f.after, f.limit = after, limit
	return f.entries[:min(limit, len(f.entries))], nil
}

func (f *fakeStore) Totals(context.Context, Scope) (Totals, error) { return Totals{}, nil }

func TestListEntriesPageSize(t *testing.T) {
	t.Parallel()
	entries := make([]Entry, 1200)
	for i := range entries {
		entries[i] = Entry{EventID: uuid.New(), RequestTime: time.Unix(int64(10_000-i), 0)}
	}
	tests := []struct {
		size      int32
		wantLimit int
		wantLen   int
	}{
		{0, DefaultPageSize + 1, DefaultPageSize},
		{1, 2, 1},
		{1000, 1001, 1000},
		{5000, 1001, 1000},
	}
	for _, tt := range tests {
		f := &fakeStore{entries: entries}
		page, err := NewService(f, "USD").ListEntries(context.Background(), "orgs/acme", tt.size, "")
		if err != nil {
			t.Fatalf("ListEntries(page_size %d) = %v", tt.size, err)
		}
		if f.limit != tt.wantLimit || len(page.Entries) != tt.wantLen || page.NextPageToken == "" {
			t.Errorf("ListEntries(page_size %d): asked store for %d, got %d entries and token %q; want %d, %d and a token",
				tt.size, f.limit, len(page.Entries), page.NextPageToken, tt.wantLimit, tt.wantLen)
		}
		last := page.Entries[len(page.Entries)-1]
		if _, err := NewService(f, "USD").ListEntries(context.Background(), "orgs/acme", tt.size, page.NextPageToken); err != nil {
			t.Fatalf("ListEntries(next page) = %v", err)
		}
		if diff := cmp.Diff(&Cursor{RequestTime: last.RequestTime.UTC(), EventID: last.EventID}, f.after); diff != "" {
			t.Errorf("next page cursor mismatch (-want +got):\n%s", diff)
		}
	}
	var verr *ValidationError
	if _, err := NewService(&fakeStore{}, "USD").ListEntries(context.Background(), "orgs/acme", -1, ""); !errors.As(err, &verr) || verr.Field != "page_size" {
		t.Errorf("ListEntries(page_size -1) = %v, want a page_size ValidationError", err)
	}
}
