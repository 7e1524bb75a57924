package authn

import (
	"context"
	"errors"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Principal is an authenticated caller.
type Principal struct {
	// Subject names the caller in audit records: keys/{key_id}.
	Subject string
	// KeyID is the id of the API key used.
	KeyID string
	// Prefix is the key's display prefix.
	Prefix string
	// Role is what the key may do.
	Role identityv1.KeyIndexEntry_Role
	// Organization is orgs/{org} for a project key, empty for a platform admin.
	Organization string
	// Project is orgs/{org}/projects/{project} for a project key.
	Project string
}

// IsPlatformAdmin reports whether p administers the whole platform.
func (p Principal) IsPlatformAdmin() bool {
	return p.Role == identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN
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

// Authorize admits platform admins to an administrative method. It returns
// ErrUnauthenticated without a principal and ErrPermissionDenied for any
// other caller. Roles scoped to an organization come with OIDC sign-in.
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
