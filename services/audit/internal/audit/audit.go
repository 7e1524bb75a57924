// Package audit is the audit log's domain: the records of who did what to
// which resource, and the paginated reads of the admin API. Records arrive
// as events from the other services and are append-only; nothing here
// changes or removes one.
package audit

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Outcome is how an audited action ended.
type Outcome string

// The outcomes a producer may report.
const (
	OutcomeAllowed Outcome = "allowed" // authorized and succeeded
	OutcomeDenied  Outcome = "denied"  // unauthenticated, forbidden or invalid
	OutcomeFailed  Outcome = "failed"  // authorized but failed
)

// Record is one audit record.
type Record struct {
	// EventID is the audit event's id, also the record's id.
	EventID uuid.UUID
	// Organization is orgs/{org}, or empty for a platform-level action,
	// which no organization's list shows.
	Organization  string
	Actor         string // keys/{key_id} or anonymous
	Action        string // the full RPC name
	Target        string // the resource acted on, when known
	Outcome       Outcome
	Status        string // the gRPC code name the caller got
	SourceAddress string
	RequestID     string
	EventTime     time.Time
	// Producer is the publishing service (the event's ce-source).
	Producer string
	// RecordTime is set by the store when the record is written.
	RecordTime time.Time
}

// Envelope is the event a record came from, kept whole beside it so that
// the record can be re-derived and verified from what the producer sent.
type Envelope struct {
	Subject string
	Type    string
	Headers map[string][]string
	Payload []byte
}

// ErrUnavailable means the audit database cannot be reached; the call may
// succeed if retried later.
var ErrUnavailable = errors.New("audit database unavailable")

// ValidationError reports a request or event field that breaks a rule.
type ValidationError struct{ Field, Reason string }

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// id is the resource id rule of every Moat resource: 3 to 63 lowercase
// letters, digits and hyphens, starting with a letter.
var id = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)

// ParseOrganization checks an organization name, orgs/{org}. field names
// the request field in the error.
func ParseOrganization(field, name string) (string, error) {
	org, ok := strings.CutPrefix(name, "orgs/")
	if !ok || !id.MatchString(org) {
		return "", &ValidationError{Field: field, Reason: fmt.Sprintf("%q is not orgs/{org}", truncate(name, 200))}
	}
	return name, nil
}

// Cursor is a position in the newest-first order of records: the next page
// starts after the record at (EventTime, EventID).
type Cursor struct {
	EventTime time.Time
	EventID   uuid.UUID
}

// Store reads the audit log. Implementations are safe for concurrent use.
type Store interface {
	// ListRecords returns at most limit records of organization, newest
	// first by (EventTime, EventID), starting after after when it is not
	// nil.
	ListRecords(ctx context.Context, organization string, after *Cursor, limit int) ([]Record, error)
}

// Page sizes of List (AIP-158).
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Service answers the admin API's audit reads. It does no authorization:
// the transport checks the caller first.
type Service struct {
	store Store
}

// NewService returns a Service reading store.
func NewService(store Store) *Service { return &Service{store: store} }

// Page is one page of records and the token of the next one ("" on the
// last page).
type Page struct {
	Records       []Record
	NextPageToken string
}

// List returns a page of parent's records, newest first. pageSize 0 means
// DefaultPageSize and larger values are capped at MaxPageSize; pageToken
// continues a previous call with the same parent.
func (s *Service) List(ctx context.Context, parent string, pageSize int32, pageToken string) (Page, error) {
	org, err := ParseOrganization("parent", parent)
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
	records, err := s.store.ListRecords(ctx, org, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list audit records of %s: %w", parent, err)
	}
	page := Page{Records: records}
	if len(records) > limit {
		page.Records = records[:limit]
		last := page.Records[limit-1]
		page.NextPageToken = encodePageToken(parent, Cursor{EventTime: last.EventTime, EventID: last.EventID})
	}
	return page, nil
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
