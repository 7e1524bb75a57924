package audit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

func TestParseOrganization(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"orgs/acme", true},
		{"orgs/a-1-b", true},
		{"", false},
		{"orgs/", false},
		{"orgs/ab", false},
		{"orgs/Acme", false},
		{"orgs/acme/", false},
		{"orgs/acme/projects/web", false},
		{"auditEvents", false},
		{"org/acme", false},
	} {
		got, err := ParseOrganization("parent", tt.name)
		var verr *ValidationError
		if tt.ok && (err != nil || got != tt.name) {
			t.Errorf("ParseOrganization(%q) = %q, %v; want it accepted", tt.name, got, err)
		}
		if !tt.ok && (!errors.As(err, &verr) || verr.Field != "parent") {
			t.Errorf("ParseOrganization(%q) = %q, %v; want a parent ValidationError", tt.name, got, err)
		}
	}
}

func TestPageToken(t *testing.T) {
	t.Parallel()
	c := Cursor{EventTime: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), EventID: uuid.Must(uuid.NewV7())}
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

// fakeStore returns canned records and records what it was asked.
type fakeStore struct {
	records []Record
	org     string
	after   *Cursor
	limit   int
}

func (f *fakeStore) ListRecords(_ context.Context, org string, after *Cursor, limit int) ([]Record, error) {
	f.org, f.after, f.limit = org, after, limit
	return f.records[:min(limit, len(f.records))], nil
}

func TestListPageSize(t *testing.T) {
	t.Parallel()
	records := make([]Record, 1200)
	for i := range records {
		records[i] = Record{EventID: uuid.New(), EventTime: time.Unix(int64(10_000-i), 0)}
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
		f := &fakeStore{records: records}
		page, err := NewService(f).List(context.Background(), "orgs/acme", tt.size, "")
		if err != nil {
			t.Fatalf("List(page_size %d) = %v", tt.size, err)
		}
		if f.org != "orgs/acme" || f.limit != tt.wantLimit || len(page.Records) != tt.wantLen || page.NextPageToken == "" {
			t.Errorf("List(page_size %d): asked store for %d of %q, got %d records and token %q; want %d of orgs/acme, %d and a token",
				tt.size, f.limit, f.org, len(page.Records), page.NextPageToken, tt.wantLimit, tt.wantLen)
		}
		last := page.Records[len(page.Records)-1]
		if _, err := NewService(f).List(context.Background(), "orgs/acme", tt.size, page.NextPageToken); err != nil {
			t.Fatalf("List(next page) = %v", err)
		}
		if diff := cmp.Diff(&Cursor{EventTime: last.EventTime.UTC(), EventID: last.EventID}, f.after); diff != "" {
			t.Errorf("next page cursor mismatch (-want +got):\n%s", diff)
		}
	}
	var verr *ValidationError
	if _, err := NewService(&fakeStore{}).List(context.Background(), "orgs/acme", -1, ""); !errors.As(err, &verr) || verr.Field != "page_size" {
		t.Errorf("List(page_size -1) = %v, want a page_size ValidationError", err)
	}
}
