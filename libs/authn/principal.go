package authn

import (
	"context"
	"errors"
	"slices"

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
	// unset otherwise (organization roles will come from memberships).
	Role identityv1.KeyIndexEntry_Role
	// Organization is orgs/{org} for a project key, empty for a platform admin.
	Organization string
	// Project is orgs/{org}/projects/{project} for a project key.
	Project string
	// AllowedModels are the logical model names a project key may call;
	// empty for every route of its project. Shared between the principals
	// of one index entry: never modify it.
	AllowedModels []string
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

// Authorize admits platform admins (keys and users) to an administrative
// method. It returns ErrUnauthenticated without a principal and
// ErrPermissionDenied for any other caller, signed-in users outside
// PlatformAdminGroup included, until roles scoped to an organization come
// with memberships.
func Authorize(ctx context.Context) error {
	p, ok := FromContext(ctx)
	if !ok {
		return ErrUnauthenticated
	}
	if !p.IsPlatformAdmin() {
		return ErrPermissionDenied
	}
	return nil
}
