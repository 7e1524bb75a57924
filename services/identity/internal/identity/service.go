package identity

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/pagetoken"
)

// Page sizes of ListKeys (AIP-158).
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Limits on what callers send.
const (
	maxDisplayName = 200
	maxModels      = 100
	maxModelName   = 128
	maxAuditTarget = 512
	changesBatch   = 500
)

// Grace periods of RotateKey.
const (
	// DefaultGracePeriod is how long a rotated key keeps working when the
	// caller does not say.
	DefaultGracePeriod = 24 * time.Hour
	// MaxGracePeriod is the longest a rotated key may keep working.
	MaxGracePeriod = 30 * 24 * time.Hour
)

// Service is the identity use cases. It is safe for concurrent use.
type Service struct {
	store  Store
	hasher Hasher
	now    func() time.Time
	// newKey generates a key; authn.NewKey outside tests.
	newKey func() (string, error)

	// Broker is Moat's Keycloak, for organizations' identity providers
	// and just-in-time membership; nil without Keycloak. Set it before
	// serving.
	Broker Broker

	// joins remembers users Join admitted nowhere.
	joins joinMisses
	// brokerSlot holds the one turn for identity provider changes.
	brokerSlot chan struct{}
}

// NewService returns a Service keeping keys in store, hashed with hasher,
// with now as its clock.
func NewService(store Store, hasher Hasher, now func() time.Time) *Service {
	return &Service{store: store, hasher: hasher, now: now, newKey: authn.NewKey, brokerSlot: make(chan struct{}, 1)}
}

// clock returns now in the precision PostgreSQL keeps, so that a key reads
// back exactly as it was written.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// CreateRequest is what a caller asks CreateKey for.
type CreateRequest struct {
	// Parent is the project, orgs/{org}/projects/{project}.
	Parent      string
	DisplayName string
	// ExpireTime is zero for a key that never expires.
	ExpireTime time.Time
	// RequestID is an optional AIP-155 request id (a UUID).
	RequestID string
	// AllowedModels are the logical model names the key may call; empty
	// for every route of the project.
	AllowedModels []string
	// AllowedMCPTools are the MCP tools the key may call; empty for every
	// tool of the project.
	AllowedMCPTools []string
	// Owner is users/{user}, or a service account or agent of Parent;
	// empty for the caller when the caller is a signed-in user other than
	// a platform admin, else no owner.
	Owner string
}

// CreateKey creates a project key and returns its record and the key
// itself, which exists nowhere else: only its HMAC and prefix are stored.
// A request id seen before returns the first key's record and an empty key
// (it is shown once). The call is audited in the transaction of the change.
//
// The project's existence is not checked: projects belong to the config
// service, and identity holds no copy of them yet.
//
// A key's owner must be a member of its organization (ErrOwnerNotMember),
// or a service account or agent of its project (ErrOwnerNotFound),
// checked in the transaction that stores the key. Only admins name an
// owner other than themselves (ErrNotOwner): members never give keys to
// service accounts or agents.
func (s *Service) CreateKey(ctx context.Context, call Call, actor Actor, r CreateRequest) (Key, string, error) {
	org, err := ParseProject(r.Parent)
	if err != nil {
		return Key{}, "", invalid("parent", err.Error())
	}
	owner := r.Owner
	if owner == "" && actor.User != "" && !actor.PlatformAdmin {
		owner = actor.User
	}
	if owner != "" {
		kind, project, _, ok := ParsePrincipal(owner)
		if !ok {
			return Key{}, "", invalid("api_key.owner", "must be users/{user}, or a service account or agent of the key's project: "+
				"orgs/{org}/projects/{project}/serviceAccounts/{service_account} or orgs/{org}/projects/{project}/agents/{agent}")
		}
		if kind != PrincipalUser && project != r.Parent {
			return Key{}, "", invalid("api_key.owner", "a service account or agent owns keys of its own project only")
		}
	}
	if owner != actor.User && !actor.Admin {
		return Key{}, "", ErrNotOwner
	}
	tools, err := checkTools("api_key.allowed_mcp_tools", r.AllowedMCPTools)
	if err != nil {
		return Key{}, "", err
	}
	if !utf8.ValidString(r.DisplayName) || utf8.RuneCountInString(r.DisplayName) > maxDisplayName {
		return Key{}, "", invalid("api_key.display_name", fmt.Sprintf("must be at most %d characters of UTF-8", maxDisplayName))
	}
	models, err := checkModels("api_key.allowed_models", r.AllowedModels)
	if err != nil {
		return Key{}, "", err
	}
	now := s.clock()
	expire := r.ExpireTime.UTC().Truncate(time.Microsecond)
	if !r.ExpireTime.IsZero() && !expire.After(now) {
		return Key{}, "", invalid("api_key.expire_time", "must be in the future")
	}
	if r.RequestID != "" {
		if _, err := uuid.Parse(r.RequestID); err != nil {
			return Key{}, "", invalid("request_id", "must be a UUID")
		}
	}
	secret, err := s.newKey()
	if err != nil {
		return Key{}, "", fmt.Errorf("generate key: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Key{}, "", fmt.Errorf("generate key id: %w", err)
	}
	k := Key{
		ID:            id.String(),
		Role:          RoleProject,
		Organization:  org,
		Project:       r.Parent,
		DisplayName:   r.DisplayName,
		Prefix:        authn.DisplayPrefix(secret),
		HMAC:          s.hasher.Hash(secret),
		RequestID:     r.RequestID,
		CreateTime:    now,
		ExpireTime:    expire,
		AllowedModels: models,
		Owner:         owner,
		// Normalised like AllowedModels: nil for every tool.
		AllowedMCPTools: tools,
	}
	got, created, err := s.store.CreateKey(ctx, k, func(got Key) AuditRecord { return allowed(call, got, now) })
	if err != nil {
		return Key{}, "", fmt.Errorf("create key in %s: %w", r.Parent, err)
	}
	if !created {
		return got, "", nil
	}
	return got, secret, nil
}

// RevokeKey revokes the key called name (orgs/{org}/projects/{project}/keys/{key},
// or keys/{key} for a platform admin key) and returns it. Revoking a
// revoked key returns it unchanged. The call is audited in the transaction
// of the change.
// Members revoke only keys they own (ErrNotOwner).
func (s *Service) RevokeKey(ctx context.Context, call Call, actor Actor, name string) (Key, error) {
	project, id, err := parseKeyName(name)
	if err != nil {
		return Key{}, invalid("name", err.Error())
	}
	now := s.clock()
	k, err := s.store.UpdateKey(ctx, id, func(k *Key) (bool, error) {
		if k.Project != project {
			return false, ErrNotFound
		}
		if !actor.mayActOn(*k) {
			return false, ErrNotOwner
		}
		if !k.RevokeTime.IsZero() {
			return false, nil
		}
		k.RevokeTime = now
		return true, nil
	}, func(k Key) AuditRecord { return allowed(call, k, now) })
	if err != nil {
		return Key{}, fmt.Errorf("revoke %s: %w", name, err)
	}
	return k, nil
}

// mayActOn reports whether the actor may revoke or rotate k: admins any
// key of the organization, members their own.
func (a Actor) mayActOn(k Key) bool {
	return a.Admin || (a.User != "" && k.Owner == a.User)
}

// Limits of MCP tool scopes.
const (
	maxTools    = 100
	maxToolName = 200
)

// checkTools validates a key's allowed MCP tools: at most maxTools entries
// of the form {server}/{tool} or {server}/*, 1 to maxToolName printable
// ASCII characters, without duplicates. It returns nil for an empty list.
func checkTools(field string, tools []string) ([]string, error) {
	if len(tools) == 0 {
		return nil, nil
	}
	if len(tools) > maxTools {
		return nil, invalid(field, fmt.Sprintf("must name at most %d tools", maxTools))
	}
	seen := make(map[string]bool, len(tools))
	for i, t := range tools {
		server, tool, ok := strings.Cut(t, "/")
		if len(t) > maxToolName || !printableASCII(t) || !ok || server == "" || tool == "" || strings.Contains(tool, "/") || strings.Contains(t, " ") {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("must be {server}/{tool} or {server}/*, at most %d printable ASCII characters without spaces", maxToolName))
		}
		if seen[t] {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), "duplicates an earlier tool")
		}
		seen[t] = true
	}
	return append([]string(nil), tools...), nil
}

// checkModels validates a key's allowed models: at most maxModels names
// of 1 to maxModelName printable ASCII characters, without duplicates. It
// returns nil for an empty list.
func checkModels(field string, models []string) ([]string, error) {
	if len(models) == 0 {
		return nil, nil
	}
	if len(models) > maxModels {
		return nil, invalid(field, fmt.Sprintf("must name at most %d models", maxModels))
	}
	seen := make(map[string]bool, len(models))
	for i, m := range models {
		if len(m) == 0 || len(m) > maxModelName || !printableASCII(m) {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("must be 1 to %d printable ASCII characters", maxModelName))
		}
		if seen[m] {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), "duplicates an earlier model")
		}
		seen[m] = true
	}
	return append([]string(nil), models...), nil
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// RotateRequest is what a caller asks RotateKey for.
type RotateRequest struct {
	// Name is the key to rotate, orgs/{org}/projects/{project}/keys/{key}.
	Name string
	// GracePeriod is how long the old key keeps working; nil for
	// DefaultGracePeriod, zero to stop it at once.
	GracePeriod *time.Duration
	// RequestID is an optional AIP-155 request id (a UUID).
	RequestID string
}

// RotateKey replaces the project key called r.Name with a new key of the
// same project, display name and allowed models, and lets the old key work
// until the end of the grace period (an earlier expiry is kept). It returns
// the old key, the new key and the new key itself; a request id seen
// before returns the first rotation's keys and an empty key (it is shown
// once). A revoked or expired key is ErrNotActive. The call is audited,
// with the old key as target, in the transaction of the change.
// Members rotate only keys they own (ErrNotOwner).
func (s *Service) RotateKey(ctx context.Context, call Call, actor Actor, r RotateRequest) (old, successor Key, secret string, _ error) {
	project, id, err := parseKeyName(r.Name)
	if err != nil {
		return Key{}, Key{}, "", invalid("name", err.Error())
	}
	if project == "" {
		return Key{}, Key{}, "", invalid("name", "must be orgs/{org}/projects/{project}/keys/{key}: only project keys rotate")
	}
	grace := DefaultGracePeriod
	if r.GracePeriod != nil {
		grace = *r.GracePeriod
	}
	if grace < 0 || grace > MaxGracePeriod {
		return Key{}, Key{}, "", invalid("grace_period", "must be between 0 and 30 days")
	}
	if r.RequestID != "" {
		if _, err := uuid.Parse(r.RequestID); err != nil {
			return Key{}, Key{}, "", invalid("request_id", "must be a UUID")
		}
	}
	secret, err = s.newKey()
	if err != nil {
		return Key{}, Key{}, "", fmt.Errorf("generate key: %w", err)
	}
	newID, err := uuid.NewV7()
	if err != nil {
		return Key{}, Key{}, "", fmt.Errorf("generate key id: %w", err)
	}
	now := s.clock()
	// The check runs for retries too: a request id must not open a key the
	// caller could not rotate.
	check := func(k Key) error {
		if k.Project != project {
			return ErrNotFound
		}
		if !actor.mayActOn(k) {
			return ErrNotOwner
		}
		return nil
	}
	old, successor, created, err := s.store.RotateKey(ctx, id, r.RequestID, check, func(k *Key) (Key, error) {
		if !k.Active(now) {
			return Key{}, ErrNotActive
		}
		end := now.Add(grace.Truncate(time.Microsecond))
		if k.ExpireTime.IsZero() || end.Before(k.ExpireTime) {
			k.ExpireTime = end
		}
		return Key{
			ID:            newID.String(),
			Role:          k.Role,
			Organization:  k.Organization,
			Project:       k.Project,
			DisplayName:   k.DisplayName,
			Prefix:        authn.DisplayPrefix(secret),
			HMAC:          s.hasher.Hash(secret),
			RequestID:     r.RequestID,
			CreateTime:    now,
			AllowedModels: k.AllowedModels,
			RotatedFrom:   k.ID,
			Owner:         k.Owner,
			// The successor has the same scope.
			AllowedMCPTools: k.AllowedMCPTools,
		}, nil
	}, func(k Key) AuditRecord { return allowed(call, k, now) })
	if err != nil {
		return Key{}, Key{}, "", fmt.Errorf("rotate %s: %w", r.Name, err)
	}
	if !created {
		return old, successor, "", nil
	}
	return old, successor, secret, nil
}

func allowed(call Call, k Key, now time.Time) AuditRecord {
	return AuditRecord{
		Call:         call,
		Organization: k.Organization,
		Target:       k.Name(),
		Outcome:      OutcomeAllowed,
		Status:       "OK",
		Time:         now,
	}
}

// RecordRefusal audits a call that changed nothing: target is the resource
// named in the request (or its parent), status the canonical gRPC code name
// the caller gets. It writes in a transaction of its own.
func (s *Service) RecordRefusal(ctx context.Context, call Call, target string, outcome Outcome, status string) error {
	if len(target) > maxAuditTarget {
		target = strings.ToValidUTF8(target[:maxAuditTarget], "")
	}
	err := s.store.RecordAudit(ctx, AuditRecord{
		Call:         call,
		Organization: authn.OrganizationOf(target),
		Target:       target,
		Outcome:      outcome,
		Status:       status,
		Time:         s.clock(),
	})
	if err != nil {
		return fmt.Errorf("record refused %s: %w", call.Action, err)
	}
	return nil
}

// ListKeys returns a page of parent's keys, revoked ones included, newest
// first, and the token of the next page ("" on the last one). Members see
// only the keys they own.
func (s *Service) ListKeys(ctx context.Context, actor Actor, parent string, pageSize int, pageToken string) ([]Key, string, error) {
	if _, err := ParseProject(parent); err != nil {
		return nil, "", invalid("parent", err.Error())
	}
	pageSize, err := pageSizeOf(pageSize)
	if err != nil {
		return nil, "", err
	}
	owner := ""
	if !actor.Admin {
		if actor.User == "" {
			return nil, "", ErrNotOwner
		}
		owner = actor.User
	}
	after, err := decodePageToken(parent, pageToken)
	if err != nil {
		return nil, "", err
	}
	keys, err := s.store.ListKeys(ctx, parent, owner, after, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("list keys of %s: %w", parent, err)
	}
	if len(keys) <= pageSize {
		return keys, "", nil
	}
	keys = keys[:pageSize]
	last := keys[pageSize-1]
	return keys, encodePageToken(parent, Cursor{CreateTime: last.CreateTime, ID: last.ID}), nil
}

// pagePosition is the keyset position a page token carries; the token
// also names its parent, so that it cannot be replayed against another
// project's list.
type pagePosition struct {
	Micros int64  `json:"t"`
	ID     string `json:"i"`
}

func encodePageToken(parent string, c Cursor) string {
	return pagetoken.Encode(parent, pagePosition{Micros: c.CreateTime.UnixMicro(), ID: c.ID})
}

func decodePageToken(parent, token string) (*Cursor, error) {
	if token == "" {
		return nil, nil
	}
	var p pagePosition
	if err := pagetoken.Decode(token, parent, &p); err != nil {
		return nil, invalid("page_token", "is not a page token of this list")
	}
	if u, err := uuid.Parse(p.ID); err != nil || u.String() != p.ID {
		return nil, invalid("page_token", "is not a page token of this list")
	}
	return &Cursor{CreateTime: time.UnixMicro(p.Micros).UTC(), ID: p.ID}, nil
}

// IndexSink receives the key index from WatchIndex.
type IndexSink interface {
	// Snapshot replaces the whole index: keys are every active key at
	// version, members every lasting membership.
	Snapshot(version int64, keys []Key, members []Member) error
	// Member sets or, for an ended membership, ends m; m.Version is its
	// version.
	Member(m Member) error
	// Upsert adds or replaces an active key; k.Version is its version.
	Upsert(k Key) error
	// Remove drops the key id, which stopped working at version.
	Remove(version int64, id string) error
}

// WatchIndex sends the key index to sink: a snapshot first, then each
// change in version order, looking for changes whenever wake fires and
// every recheck besides (in case a wake-up was lost). Keys that expire
// without a change are not removed: every receiver drops them itself from
// their expire time. WatchIndex returns ctx's error when ctx ends, or the
// first error of the store or sink.
func (s *Service) WatchIndex(ctx context.Context, wake <-chan struct{}, recheck time.Duration, sink IndexSink) error {
	version, keys, members, err := s.store.IndexSnapshot(ctx, s.clock())
	if err != nil {
		return fmt.Errorf("read key index snapshot: %w", err)
	}
	if err := sink.Snapshot(version, keys, members); err != nil {
		return err
	}
	t := time.NewTicker(recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-t.C:
		}
		if version, err = s.sendChanges(ctx, version, sink); err != nil {
			return err
		}
	}
}

// sendChanges sends every change after version, keys and memberships
// merged in version order, and returns the version reached.
func (s *Service) sendChanges(ctx context.Context, version int64, sink IndexSink) (int64, error) {
	for {
		keys, members, err := s.store.ChangesSince(ctx, version, changesBatch)
		if err != nil {
			return version, fmt.Errorf("read key index changes after %d: %w", version, err)
		}
		// A full batch may have more changes after its last one: send
		// nothing past the lowest such bound, and read again from there.
		bound, more := int64(math.MaxInt64), false
		if len(keys) == changesBatch {
			bound, more = keys[len(keys)-1].Version, true
		}
		if len(members) == changesBatch {
			bound, more = min(bound, members[len(members)-1].Version), true
		}
		now := s.clock()
		for len(keys) > 0 || len(members) > 0 {
			var err error
			if len(members) == 0 || (len(keys) > 0 && keys[0].Version < members[0].Version) {
				k := keys[0]
				if k.Version > bound {
					break
				}
				keys = keys[1:]
				if k.Active(now) {
					err = sink.Upsert(k)
				} else {
					err = sink.Remove(k.Version, k.ID)
				}
				version = k.Version
			} else {
				m := members[0]
				if m.Version > bound {
					break
				}
				members = members[1:]
				err = sink.Member(m)
				version = m.Version
			}
			if err != nil {
				return version, err
			}
		}
		if !more {
			return version, nil
		}
	}
}

// Bootstrap makes sure the platform can be administered: when no platform
// admin key works, it creates one, hands it over through f, and returns it
// with created == true. Replicas starting together create one key between
// them (the store serialises Bootstrap).
//
// The file is written before the key is committed, so a crash between the
// two leaves a file whose key is unknown to the database; the next start
// adopts that key instead of refusing the file. A file holding anything else
// (a malformed key, or a key the database knows, such as a revoked admin
// key) is ErrKeyFileConflict: it is never overwritten, and the operator
// removes it to get a new key.
func (s *Service) Bootstrap(ctx context.Context, call Call, f KeyFile) (_ Key, created bool, _ error) {
	var k Key
	err := s.store.Bootstrap(ctx, func(ctx context.Context, tx BootstrapTx) error {
		now := s.clock()
		exists, err := tx.ActiveAdminExists(ctx, now)
		if err != nil || exists {
			return err
		}
		secret, found, err := f.Read()
		if err != nil {
			return fmt.Errorf("read bootstrap key file: %w", err)
		}
		if found {
			if !wellFormed(secret) {
				return ErrKeyFileConflict
			}
			known, err := tx.HMACKnown(ctx, s.hasher.Hash(secret))
			if err != nil {
				return err
			}
			if known {
				return ErrKeyFileConflict
			}
		} else {
			if secret, err = s.newKey(); err != nil {
				return fmt.Errorf("generate key: %w", err)
			}
			if err := f.Create(secret); err != nil {
				return fmt.Errorf("write bootstrap key file: %w", err)
			}
		}
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("generate key id: %w", err)
		}
		k = Key{
			ID:          id.String(),
			Role:        RolePlatformAdmin,
			DisplayName: "bootstrap platform admin",
			Prefix:      authn.DisplayPrefix(secret),
			HMAC:        s.hasher.Hash(secret),
			CreateTime:  now,
		}
		if err := tx.CreateKey(ctx, k, allowed(call, k, now)); err != nil {
			return fmt.Errorf("create bootstrap key: %w", err)
		}
		created = true
		return nil
	})
	if err != nil {
		return Key{}, false, fmt.Errorf("bootstrap platform admin key: %w", err)
	}
	return k, created, nil
}

// keyLen is the length of authn.NewKey's keys: the prefix and 32 bytes in
// unpadded base64url.
var keyLen = len(authn.KeyPrefix) + base64.RawURLEncoding.EncodedLen(32)

// wellFormed reports whether key has the shape of a Moat key.
func wellFormed(key string) bool {
	rest, ok := strings.CutPrefix(key, authn.KeyPrefix)
	if !ok || len(key) != keyLen {
		return false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil && len(b) == 32
}
