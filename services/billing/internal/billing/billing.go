// Package billing is the usage ledger's domain: ledger entries priced from
// the embedded price table, the scopes they are read by (an organization or
// one of its projects), and the paginated reads of the admin API.
//
// Entries are append-only. They are written by the ledger projector from
// the gateways' usage events and only ever read here.
package billing

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Entry is one ledger line: one request a gateway served, priced.
type Entry struct {
	// EventID is the usage event's id, which is the gateway's request id.
	EventID       uuid.UUID
	Organization  string // orgs/{org}
	Project       string // orgs/{org}/projects/{project}
	KeyID         string
	Model         string // the logical model the client asked for
	UpstreamModel string // the provider's model, which the price is looked up by
	Provider      string // orgs/{org}/providers/{provider}
	// InputTokens is the uncached input; the cache counts are apart from it.
	InputTokens           int64
	CacheReadInputTokens  int64
	CacheWriteInputTokens int64
	// OutputTokens is the whole output, ReasoningTokens included.
	OutputTokens    int64
	ReasoningTokens int64
	// UsageEstimated is set when the provider reported no usage and the
	// counts are the gateway's estimate.
	UsageEstimated bool
	CostMicros     int64
	Currency       string
	Priced         bool
	PriceVersion   string
	HTTPStatus     int32
	Stream         bool
	Latency        time.Duration
	RequestTime    time.Time
	// RecordTime is set by the store when the entry is written.
	RecordTime time.Time
}

// Totals sums the entries of a scope.
type Totals struct {
	EntryCount            int64
	InputTokens           int64
	CacheReadInputTokens  int64
	CacheWriteInputTokens int64
	OutputTokens          int64
	ReasoningTokens       int64
	CostMicros            int64
	Currency              string
	UnpricedCount         int64
	// EstimatedCount is how many entries carry estimated usage.
	EstimatedCount int64
}

// Scope selects entries: every entry of Organization, or, when Project is
// set, only that project's.
type Scope struct {
	Organization string
	Project      string
}

// String is the scope's resource name, the API's parent.
func (s Scope) String() string {
	if s.Project != "" {
		return s.Project
	}
	return s.Organization
}

// ErrMixedCurrencies means a scope holds entries in more than one currency,
// which cannot be summed into one total.
var ErrMixedCurrencies = errors.New("entries in more than one currency")

// ErrUnavailable means the ledger's database cannot be reached; the call
// may succeed if retried later.
var ErrUnavailable = errors.New("ledger database unavailable")

// ValidationError reports a request or event field that breaks a rule.
type ValidationError struct{ Field, Reason string }

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// id is the resource id rule of every Moat resource: 3 to 63 lowercase
// letters, digits and hyphens, starting with a letter.
var id = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)

// ParseScope reads a parent resource name, orgs/{org} or
// orgs/{org}/projects/{project}. field names the request field in the error.
func ParseScope(field, name string) (Scope, error) {
	parts := strings.Split(name, "/")
	switch {
	case len(parts) == 2 && parts[0] == "orgs" && id.MatchString(parts[1]):
		return Scope{Organization: name}, nil
	case len(parts) == 4 && parts[0] == "orgs" && id.MatchString(parts[1]) && parts[2] == "projects" && id.MatchString(parts[3]):
		return Scope{Organization: "orgs/" + parts[1], Project: name}, nil
	}
	return Scope{}, &ValidationError{Field: field, Reason: fmt.Sprintf("%q is not orgs/{org} or orgs/{org}/projects/{project}", truncate(name, 200))}
}

// Cursor is a position in the newest-first order of entries: the next page
// starts after the entry at (RequestTime, EventID).
type Cursor struct {
	RequestTime time.Time
	EventID     uuid.UUID
}

// Store reads the ledger. Implementations are safe for concurrent use.
type Store interface {
	// ListEntries returns at most limit entries of scope, newest first by
	// (RequestTime, EventID), starting after after when it is not nil.
	ListEntries(ctx context.Context, scope Scope, after *Cursor, limit int) ([]Entry, error)
	// Totals sums every entry of scope; Currency is empty when there are
	// none.
	Totals(ctx context.Context, scope Scope) (Totals, error)
}

// Page sizes of ListEntries (AIP-158).
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Service answers the admin API's ledger reads. It does no authorization:
// the transport checks the caller first.
type Service struct {
	store    Store
	currency string
}

// NewService returns a Service reading store; currency is reported by
// Totals of a scope without entries.
func NewService(store Store, currency string) *Service {
	return &Service{store: store, currency: currency}
}

// Page is one page of entries and the token of the next one ("" on the
// last page).
type Page struct {
	Entries       []Entry
	NextPageToken string
}

// ListEntries returns a page of parent's entries, newest first. pageSize 0
// means DefaultPageSize and larger values are capped at MaxPageSize;
// pageToken continues a previous call with the same parent.
func (s *Service) ListEntries(ctx context.Context, parent string, pageSize int32, pageToken string) (Page, error) {
	scope, err := ParseScope("parent", parent)
	if err != nil {
		return Page{}, err
	}
	limit, err := pageLimit(pageSize)
	if err != nil {
		return Page{}, err
	}
	var after *Cursor
	if pageToken != "" {
		c, err := decodePageToken(pageToken, parent)
		if err != nil {
			return Page{}, err
		}
		after = &c
	}
	entries, err := s.store.ListEntries(ctx, scope, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list entries of %s: %w", parent, err)
	}
	page := Page{Entries: entries}
	if len(entries) > limit {
		page.Entries = entries[:limit]
		last := page.Entries[limit-1]
		page.NextPageToken = encodePageToken(parent, Cursor{RequestTime: last.RequestTime, EventID: last.EventID})
	}
	return page, nil
}

// Totals sums every entry of parent.
func (s *Service) Totals(ctx context.Context, parent string) (Totals, error) {
	scope, err := ParseScope("parent", parent)
	if err != nil {
		return Totals{}, err
	}
	t, err := s.store.Totals(ctx, scope)
	if err != nil {
		return Totals{}, fmt.Errorf("sum entries of %s: %w", parent, err)
	}
	if t.Currency == "" {
		t.Currency = s.currency
	}
	return t, nil
}

func pageLimit(size int32) (int, error) {
	switch {
	case size < 0:
		return 0, &ValidationError{Field: "page_size", Reason: "must not be negative"}
	case size == 0:
		return DefaultPageSize, nil
	case size > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(size), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
