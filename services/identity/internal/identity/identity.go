// Package identity holds the rules of Moat's API keys: who holds one, how it
// is named, generated, stored, revoked and expired, which keys make up the key
// index every service authenticates against, and the audit record each key
// mutation leaves; and of the principals keys belong to: organization
// members, and projects' service accounts and agents. It knows nothing of gRPC or PostgreSQL: Store is what it
// needs from a database, and the transports map its errors.
package identity

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Role is what a key may do.
type Role int

// The roles. The zero value is invalid, so a key read without its role is
// never mistaken for a project key.
const (
	// RoleProject keys call the gateway's data plane for one project.
	RoleProject Role = iota + 1
	// RolePlatformAdmin keys administer the whole platform; they belong to
	// no organization or project.
	RolePlatformAdmin
)

// String returns the role as stored: "project" or "platform_admin".
func (r Role) String() string {
	switch r {
	case RoleProject:
		return "project"
	case RolePlatformAdmin:
		return "platform_admin"
	default:
		return "unspecified"
	}
}

// Key is an API key's record. The key itself is never part of it: only its
// HMAC under the server secret, to look it up, and its display prefix, to
// tell keys apart.
type Key struct {
	// ID is a UUIDv7 in canonical form, the last segment of Name.
	ID   string
	Role Role
	// Organization is orgs/{org}; empty for a platform admin key.
	Organization string
	// Project is orgs/{org}/projects/{project}; empty for a platform admin key.
	Project     string
	DisplayName string
	Prefix      string
	HMAC        []byte
	// RequestID is the AIP-155 request id the key was created with, if any.
	RequestID  string
	CreateTime time.Time
	// ExpireTime is zero for a key that never expires.
	ExpireTime time.Time
	// RevokeTime is zero while the key is not revoked.
	RevokeTime time.Time
	// Version is the key index version of the key's latest change.
	Version int64
	// AllowedModels are the logical model names the key may call; nil
	// means every route of its project.
	AllowedModels []string
	// RotatedFrom is the id of the key this one was rotated from, if any.
	RotatedFrom string
	// Owner is the principal the key acts for: users/{user}, or the name
	// of a service account or agent of the key's project; empty for a
	// project's own key.
	Owner string
	// AllowedMCPTools are the MCP tools the key may call ({server}/{tool}
	// or {server}/*); nil means every tool of its project.
	AllowedMCPTools []string
	// LastUseTime is when the key was last used on the gateway, zero if
	// never. It is approximate (see keyusage) and not part of the key
	// index: recording it does not change Version.
	LastUseTime time.Time
}

// Name is the key's resource name: orgs/{org}/projects/{project}/keys/{key}
// for a project key, keys/{key} for a platform admin key.
func (k Key) Name() string {
	if k.Project == "" {
		return "keys/" + k.ID
	}
	return k.Project + "/keys/" + k.ID
}

// Active reports whether the key works at now: not revoked and not expired.
func (k Key) Active(now time.Time) bool {
	return k.RevokeTime.IsZero() && (k.ExpireTime.IsZero() || now.Before(k.ExpireTime))
}

// Errors the transports map to statuses.
var (
	// ErrNotFound reports a key that does not exist, or not under the name
	// it was asked for (another project's key looks exactly like a missing
	// one).
	ErrNotFound = errors.New("api key not found")
	// ErrRequestIDReused reports an AIP-155 request id already used to
	// create a key in another project.
	ErrRequestIDReused = errors.New("request_id was already used for a different request")
	// ErrNotActive reports a key that cannot be rotated because it is
	// revoked or expired.
	ErrNotActive = errors.New("api key is revoked or expired")
	// ErrUnavailable wraps store errors that mean the database cannot be
	// reached: the caller may retry later.
	ErrUnavailable = errors.New("database unavailable")
	// ErrKeyFileConflict reports a bootstrap key file that holds something
	// other than the key Bootstrap would write; it is never overwritten.
	ErrKeyFileConflict = errors.New("bootstrap key file exists and holds a different key")
)

// ValidationError reports a request field that breaks a rule.
type ValidationError struct{ Field, Reason string }

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, reason string) error { return &ValidationError{Field: field, Reason: reason} }

// Outcome is how an audited call ended.
type Outcome int

// The outcomes of moat.audit.v1.AuditEvent.
const (
	// OutcomeAllowed: authorized and done.
	OutcomeAllowed Outcome = iota + 1
	// OutcomeDenied: refused as unauthenticated, forbidden or invalid.
	OutcomeDenied
	// OutcomeFailed: authorized but failed.
	OutcomeFailed
)

// Call is what the transport knows about an audited call.
type Call struct {
	// Actor is the caller's principal (keys/{key}), or "anonymous".
	Actor string
	// Action is the fully qualified RPC name.
	Action string
	// SourceAddress is the caller's network address.
	SourceAddress string
	// RequestID ties the record to the request: its AIP-155 request id, or
	// its trace id.
	RequestID string
}

// AuditRecord is one audited call: who did what to which resource, how it
// ended and when. It never holds key material: targets are resource names.
type AuditRecord struct {
	Call
	// Organization is orgs/{org} of the target, or empty for platform
	// level targets.
	Organization string
	// Target is the resource acted on, or the parent of a refused create.
	Target  string
	Outcome Outcome
	// Status is the canonical gRPC code name the caller got, e.g. OK.
	Status string
	Time   time.Time
}

// Cursor is a position in a project's key list, newest first.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// Store is the persistence the identity service needs. Every method that
// changes keys bumps the changed key's version, wakes the key index
// watchers, and writes its audit record, all in the transaction of the
// change.
type Store interface {
	// CreateKey inserts k, unless k.RequestID names a key created before:
	// then it returns that key and created == false (AIP-155), or
	// ErrRequestIDReused when that key has another role or project. audit
	// builds the record for the resulting key; it is written either way.
	// A new key's owner must exist in the transaction that inserts it: a
	// user must be a member of its organization (ErrOwnerNotMember), a
	// service account or agent one of its project (ErrOwnerNotFound).
	CreateKey(ctx context.Context, k Key, audit func(Key) AuditRecord) (_ Key, created bool, _ error)
	// UpdateKey loads key id for update and passes it to fn. When fn
	// returns changed == true the key is stored with a new version. audit
	// is written unless fn fails. A missing key is ErrNotFound.
	UpdateKey(ctx context.Context, id string, fn func(*Key) (changed bool, err error), audit func(Key) AuditRecord) (Key, error)
	// RotateKey, in one transaction, loads key id for update, passes it to
	// check (which refuses callers who may not rotate it) and then to fn,
	// which changes it and returns its successor; both are stored with new
	// versions. When requestID names a key created before, RotateKey
	// instead returns key id and that key with created == false (AIP-155),
	// still after check passes, or ErrRequestIDReused when that key is not
	// a successor of key id. audit builds the record for the old key; it is
	// written unless check or fn fails. A missing key is ErrNotFound.
	RotateKey(ctx context.Context, id, requestID string, check func(old Key) error, fn func(old *Key) (Key, error), audit func(old Key) AuditRecord) (old, successor Key, created bool, _ error)
	// ListKeys returns at most limit keys of project, newest first,
	// starting after after (nil: from the newest); only those of owner
	// when owner is not empty.
	ListKeys(ctx context.Context, project, owner string, after *Cursor, limit int) ([]Key, error)
	// RecordAudit writes a record in a transaction of its own: for calls
	// that changed nothing.
	RecordAudit(ctx context.Context, a AuditRecord) error
	// IndexSnapshot returns, in one consistent read, the current index
	// version, every key active at now and every lasting membership.
	IndexSnapshot(ctx context.Context, now time.Time) (version int64, keys []Key, members []Member, err error)
	// ChangesSince returns, in one consistent read, at most limit keys and
	// at most limit memberships (ended ones included) whose version is
	// above version, each in version order.
	ChangesSince(ctx context.Context, version int64, limit int) ([]Key, []Member, error)

	// IsMember reports whether user id is a member of org.
	IsMember(ctx context.Context, org, userID string) (bool, error)
	// CreateMember inserts m, or, when revive is true, revives an ended
	// membership of the same user as m; ErrMemberExists when one lasts, or
	// when one ended and revive is false. audit's record is written with it.
	CreateMember(ctx context.Context, m Member, revive bool, audit func(Member) AuditRecord) (Member, error)
	// GetMember returns a lasting membership, or ErrMemberNotFound.
	GetMember(ctx context.Context, org, userID string) (Member, error)
	// ListMembers returns at most limit lasting memberships of org, oldest
	// first, after after (nil: from the oldest).
	ListMembers(ctx context.Context, org string, after *MemberCursor, limit int) ([]Member, error)
	// UpdateMember loads the membership for update and stores it with a
	// new version when fn reports a change; audit's record is written
	// either way.
	UpdateMember(ctx context.Context, org, userID string, fn func(*Member) bool, audit func(Member) AuditRecord) (Member, error)
	// DeleteMember ends the membership at now and revokes the keys the user
	// owns in org, and returns how many; audit's record is written with it.
	// While agents of org name the user as owner or acts_for it changes
	// nothing and returns ErrMemberHasAgents.
	DeleteMember(ctx context.Context, org, userID string, now time.Time, audit func(Member) AuditRecord) (revoked int, _ error)
	// MembershipsOf returns user id's lasting memberships, oldest first.
	MembershipsOf(ctx context.Context, userID string) ([]Member, error)

	// CreateIdP inserts p and its email domains (ErrIdPExists,
	// ErrDomainTaken), runs apply, and writes a, all in one transaction:
	// when apply fails nothing is stored.
	CreateIdP(ctx context.Context, p Provider, apply func(context.Context) error, a AuditRecord) error
	// GetIdP returns a provider or ErrIdPNotFound.
	GetIdP(ctx context.Context, org, id string) (Provider, error)
	// IdPByAlias returns the provider with a Keycloak alias, or
	// ErrIdPNotFound.
	IdPByAlias(ctx context.Context, alias string) (Provider, error)
	// ListIdPs returns at most limit providers of org in id order, after
	// the id after ("" from the first).
	ListIdPs(ctx context.Context, org, after string, limit int) ([]Provider, error)
	// UpdateIdP, in one transaction, loads a provider for update, lets
	// change change it, stores it (ErrDomainTaken), runs apply on the
	// result and writes a: apply (the Keycloak change) runs after every
	// database step that can refuse the update.
	UpdateIdP(ctx context.Context, org, id string, change func(*Provider) error, apply func(context.Context, Provider) error, a AuditRecord) (Provider, error)
	// DeleteIdP, in one transaction, deletes a provider, runs apply on it
	// and writes a.
	DeleteIdP(ctx context.Context, org, id string, apply func(context.Context, Provider) error, a AuditRecord) error
	// CreateServiceAccount inserts a and writes audit, in one transaction;
	// ErrServiceAccountExists when its project has one with its id.
	CreateServiceAccount(ctx context.Context, a ServiceAccount, audit AuditRecord) error
	// GetServiceAccount returns a service account or
	// ErrServiceAccountNotFound.
	GetServiceAccount(ctx context.Context, project, id string) (ServiceAccount, error)
	// ListServiceAccounts returns at most limit service accounts of
	// project in id order, after the id after ("" from the first).
	ListServiceAccounts(ctx context.Context, project, after string, limit int) ([]ServiceAccount, error)
	// UpdateServiceAccount loads a service account for update, lets fn
	// change it, stores it and writes audit, in one transaction.
	UpdateServiceAccount(ctx context.Context, project, id string, fn func(*ServiceAccount) error, audit AuditRecord) (ServiceAccount, error)
	// DeleteServiceAccount deletes a service account, revokes at now the
	// keys it owns (each with a new version, waking the watchers) and
	// writes audit, in one transaction, and returns how many keys it
	// revoked.
	DeleteServiceAccount(ctx context.Context, project, id string, now time.Time, audit AuditRecord) (revoked int, _ error)
	// CreateAgent inserts a and writes audit, in one transaction;
	// ErrAgentExists when its project has one with its id, and
	// ErrAgentUserNotMember unless a's users are lasting members of its
	// organization, which they then stay until the transaction ends.
	CreateAgent(ctx context.Context, a Agent, audit AuditRecord) error
	// GetAgent returns an agent or ErrAgentNotFound.
	GetAgent(ctx context.Context, project, id string) (Agent, error)
	// ListAgents returns at most limit agents of project in id order,
	// after the id after ("" from the first).
	ListAgents(ctx context.Context, project, after string, limit int) ([]Agent, error)
	// UpdateAgent loads an agent for update, lets fn change it, checks its
	// users as CreateAgent does, stores it and writes audit, in one
	// transaction.
	UpdateAgent(ctx context.Context, project, id string, fn func(*Agent) error, audit AuditRecord) (Agent, error)
	// DeleteAgent deletes an agent and revokes its keys as
	// DeleteServiceAccount does.
	DeleteAgent(ctx context.Context, project, id string, now time.Time, audit AuditRecord) (revoked int, _ error)
	// Bootstrap runs fn in one transaction that no other replica's
	// Bootstrap runs concurrently with.
	Bootstrap(ctx context.Context, fn func(context.Context, BootstrapTx) error) error
}

// BootstrapTx is the part of Store that Bootstrap uses inside its
// transaction.
type BootstrapTx interface {
	// ActiveAdminExists reports whether a platform admin key works at now.
	ActiveAdminExists(ctx context.Context, now time.Time) (bool, error)
	// HMACKnown reports whether any key, revoked or not, has this HMAC.
	HMACKnown(ctx context.Context, hmac []byte) (bool, error)
	// CreateKey inserts k and writes a, as Store.CreateKey does.
	CreateKey(ctx context.Context, k Key, a AuditRecord) error
}

// Hasher computes the HMAC that keys are stored and looked up under.
type Hasher interface {
	Hash(key string) []byte
}

// KeyFile is where Bootstrap hands the first platform admin key over.
type KeyFile interface {
	// Read returns the key the file holds; ok is false when there is no
	// file.
	Read() (key string, ok bool, err error)
	// Create writes key to a new file that only its owner can read. It
	// fails, leaving the existing file alone, when there already is one.
	Create(key string) error
}

// idPattern is the shape of organization and project ids.
var idPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)

// ParseProject checks that name is orgs/{org}/projects/{project} with
// well-formed ids and returns its organization, orgs/{org}. It does not
// check that the project exists: the config service owns projects.
func ParseProject(name string) (org string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "orgs" || parts[2] != "projects" {
		return "", errors.New("must be orgs/{org}/projects/{project}")
	}
	if !idPattern.MatchString(parts[1]) || !idPattern.MatchString(parts[3]) {
		return "", errors.New("ids must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter")
	}
	return "orgs/" + parts[1], nil
}

// parseKeyName splits orgs/{org}/projects/{project}/keys/{key} into the
// project and the key id, or keys/{key} into "" and the key id.
func parseKeyName(name string) (project, id string, err error) {
	i := strings.LastIndex(name, "/keys/")
	switch {
	case strings.HasPrefix(name, "keys/") && strings.Count(name, "/") == 1:
		id = strings.TrimPrefix(name, "keys/")
	case i > 0:
		project, id = name[:i], name[i+len("/keys/"):]
		if _, err := ParseProject(project); err != nil {
			return "", "", errors.New("must be orgs/{org}/projects/{project}/keys/{key} or keys/{key}")
		}
	default:
		return "", "", errors.New("must be orgs/{org}/projects/{project}/keys/{key} or keys/{key}")
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return "", "", errors.New("the key id must be a lowercase UUID")
	}
	return project, id, nil
}
