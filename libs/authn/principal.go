package authn

import (
	"context"
	"errors"
	"slices"
	"strings"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Kind says how a Principal authenticated.
type Kind string

// The kinds of Principal.
const (
	// KindAPIKey is a caller that presented a Moat API key.
	KindAPIKey Kind = "api_key"
	// KindUser is a person who presented an OIDC access token.
	KindUser Kind = "user"
)

// PlatformAdminGroup is the group whose members are platform admins: a
// user whose verified access token lists it in its groups claim gets
// ROLE_PLATFORM_ADMIN. identity's realm bootstrap creates the group in
// Keycloak, and the groups mapper puts group names (not paths) into the
// claim, so only the realm's administrators decide who is in it. Every
// other user is authenticated but holds no role until organization
// memberships exist.
const PlatformAdminGroup = "platform-admins"

// Principal is an authenticated caller.
type Principal struct {
	// Subject names the caller in audit records: keys/{key_id} for an API
	// key, users/{sub} for a user (sub as the issuer states it).
	Subject string
	// Kind says whether the caller used an API key or is a user.
	Kind Kind
	// KeyID is the id of the API key used.
	KeyID string
	// Prefix is the key's display prefix.
	Prefix string
	// Role is what the caller may do: a key's role, or for a user
	// ROLE_PLATFORM_ADMIN when the token lists PlatformAdminGroup and
	// unset otherwise (a user's organization roles are in Roles).
	Role identityv1.KeyIndexEntry_Role
	// Roles maps orgs/{org} to a user's role there, from the key index's
	// memberships; nil for keys. Shared with the index: never modify it.
	Roles map[string]identityv1.OrgRole
	// Organization is orgs/{org} for a project key, empty for a platform admin.
	Organization string
	// Project is orgs/{org}/projects/{project} for a project key.
	Project string
	// AllowedModels are the logical model names a project key may call;
	// empty for every route of its project. Shared between the principals
	// of one index entry: never modify it.
	AllowedModels []string
	// AllowedMCPTools are the MCP tools ({server}/{tool} or {server}/*)
	// a project key may call; empty for every tool of its project. Shared
	// like AllowedModels.
	AllowedMCPTools []string
	// Owner is the principal a key acts for: users/{user}, or a service
	// account or agent of the key's project (its resource name); empty for
	// a project's own key.
	Owner string
	// Username and Email are a user's preferred_username and email claims,
	// for logs and display only: users can often change them, so nothing
	// is decided or recorded by them (audit records name Subject).
	Username, Email string
}

// IsUser reports whether p is a person signed in through OIDC.
func (p Principal) IsUser() bool { return p.Kind == KindUser }

// IsPlatformAdmin reports whether p administers the whole platform: a
// platform-admin key, or a user in PlatformAdminGroup.
func (p Principal) IsPlatformAdmin() bool {
	return p.Role == identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN
}

// MayUseModel reports whether p may call the logical model: true when p's
// key names no allowed models, or names this one.
func (p Principal) MayUseModel(model string) bool {
	return len(p.AllowedModels) == 0 || slices.Contains(p.AllowedModels, model)
}

var (
	// ErrUnauthenticated reports a missing, malformed, unknown, revoked or
	// expired credential. It never says which.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied reports an authenticated caller without the
	// right to act.
	ErrPermissionDenied = errors.New("permission denied")
)

// DeniedMessage is what every service tells a caller Require refused. It
// names no resource and does not say whether the target exists.
const DeniedMessage = "permission denied: this call needs a role you do not hold in the organization it names " +
	"(org admin or member, from your memberships) or platform admin"

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller's Principal, if the call was authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Require is the one authorization check of every service: it admits the
// caller when they hold at least role in the organization that resource
// lies in. resource is any resource name or parent (orgs/{org},
// orgs/{org}/projects/{project}/..., "" for platform-level methods);
// platform admins pass everywhere, an org admin passes for member and admin
// methods of their organization, a member for member methods of theirs.
// Names outside an organization (and malformed ones) admit platform admins
// only, so the check never depends on a name parsing the way a handler
// parses it later. It returns ErrUnauthenticated without a principal and
// ErrPermissionDenied otherwise; API keys other than platform-admin keys
// hold no organization role.
func Require(ctx context.Context, resource string, role identityv1.OrgRole) error {
	p, ok := FromContext(ctx)
	if !ok {
		return ErrUnauthenticated
	}
	if p.IsPlatformAdmin() {
		return nil
	}
	org := OrganizationOf(resource)
	if org == "" || role == identityv1.OrgRole_ORG_ROLE_UNSPECIFIED {
		return ErrPermissionDenied
	}
	if Covers(p.Roles[org], role) {
		return nil
	}
	return ErrPermissionDenied
}

// RequirePlatformAdmin admits platform admins only: for methods that span
// organizations (creating them, listing all of them, global settings).
func RequirePlatformAdmin(ctx context.Context) error {
	return Require(ctx, "", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED)
}

// Covers reports whether holding role have allows what need requires: an
// admin may do what a member may.
func Covers(have, need identityv1.OrgRole) bool {
	switch need {
	case identityv1.OrgRole_ORG_ROLE_ADMIN:
		return have == identityv1.OrgRole_ORG_ROLE_ADMIN
	case identityv1.OrgRole_ORG_ROLE_MEMBER:
		return have == identityv1.OrgRole_ORG_ROLE_ADMIN || have == identityv1.OrgRole_ORG_ROLE_MEMBER
	default:
		return false
	}
}

// OrganizationOf returns orgs/{org} for a resource name in an organization,
// and "" for any other string. It accepts only the first two segments'
// shape, not the whole name's: callers validate names themselves.
func OrganizationOf(name string) string {
	rest, ok := strings.CutPrefix(name, "orgs/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	if !validID(id) {
		return ""
	}
	return "orgs/" + id
}

// validID reports whether id has the shape of organization and project
// ids: 3 to 63 characters of a-z, 0-9 and -, starting with a letter.
func validID(id string) bool {
	if len(id) < 3 || len(id) > 63 || id[0] < 'a' || id[0] > 'z' {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
