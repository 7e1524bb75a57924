package authn

import (
	"context"
	"crypto/subtle"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/serve"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Authenticator verifies an API key and knows users' organization roles;
// *Index is one.
type Authenticator interface {
	Authenticate(key string, now time.Time) (Principal, error)
	// Roles returns user's role in each organization (see Index.Roles).
	Roles(user string) map[string]identityv1.OrgRole
}

// Interceptor authenticates every gRPC call of a service (and so every REST
// call, which reaches gRPC through the service's own REST proxy): an API
// key or, when Tokens is set, an OIDC access token in
// `authorization: Bearer <credential>` yields a Principal in the context;
// the methods listed in Internal require the internal token instead; health
// and reflection are public. Authorization is the handler's job.
type Interceptor struct {
	// Auth checks API keys (credentials starting with KeyPrefix).
	Auth Authenticator
	// Tokens, when set, checks every other bearer credential as an OIDC
	// access token; a verified token yields a KindUser Principal, a
	// platform admin when its groups include PlatformAdminGroup. When nil,
	// every bearer credential goes to Auth. Config.Verifier builds it.
	Tokens Verifier
	// Token is the internal token; Internal methods are refused without it.
	Token string
	// Internal lists full method names reserved for Moat's own services.
	Internal []string
	// Denied, when set, is told about every refused call (after the
	// refusal is decided, before it is returned), so services can audit
	// refused mutations. err is a gRPC status error.
	Denied func(ctx context.Context, fullMethod string, err error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Unary returns the unary server interceptor.
func (i *Interceptor) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := i.authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Stream returns the stream server interceptor.
func (i *Interceptor) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := i.authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

func public(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/grpc.reflection.")
}

func (i *Interceptor) internal(method string) bool {
	for _, m := range i.Internal {
		if m == method {
			return true
		}
	}
	return false
}

func (i *Interceptor) authenticate(ctx context.Context, method string) (context.Context, error) {
	if public(method) {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if i.internal(method) {
		got := first(md, grpcclient.InternalTokenKey)
		if i.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(i.Token)) != 1 {
			return ctx, i.deny(ctx, method, status.Error(codes.Unauthenticated, "this method is for Moat services: internal token required"))
		}
		return ctx, nil
	}
	cred, ok := bearer(first(md, "authorization"))
	if !ok {
		return ctx, i.deny(ctx, method, status.Error(codes.Unauthenticated, "missing credentials: send `Authorization: Bearer <API key or access token>`"))
	}
	if i.Tokens != nil && !strings.HasPrefix(cred, KeyPrefix) {
		return i.authenticateToken(ctx, method, cred)
	}
	if i.Auth == nil {
		return ctx, i.deny(ctx, method, status.Error(codes.Unauthenticated, "API keys are not accepted here"))
	}
	now := time.Now
	if i.Now != nil {
		now = i.Now
	}
	p, err := i.Auth.Authenticate(cred, now())
	if err != nil {
		if !errors.Is(err, ErrUnauthenticated) {
			return ctx, i.deny(ctx, method, status.Error(codes.Internal, "internal error"))
		}
		return ctx, i.deny(ctx, method, status.Error(codes.Unauthenticated, "invalid API key: unknown, revoked or expired"))
	}
	return NewContext(ctx, p), nil
}

// authenticateToken admits the holder of a valid OIDC access token as a
// user. Its refusals, like the key path's, never say what was wrong, so a
// caller probing with forged tokens learns nothing from them.
func (i *Interceptor) authenticateToken(ctx context.Context, method, raw string) (context.Context, error) {
	claims, err := i.Tokens.Verify(ctx, raw)
	switch {
	case err == nil:
		p := userPrincipal(claims)
		if i.Auth != nil {
			p.Roles = i.Auth.Roles(p.Subject)
		}
		return NewContext(ctx, p), nil
	case errors.Is(err, ErrUnauthenticated):
		return ctx, i.deny(ctx, method, status.Error(codes.Unauthenticated, "invalid access token: malformed, expired or not for this service"))
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return ctx, i.deny(ctx, method, status.FromContextError(err).Err())
	default:
		return ctx, i.deny(ctx, method, status.Error(codes.Internal, "internal error"))
	}
}

// userPrincipal is the Principal of a verified token's holder.
func userPrincipal(c TokenClaims) Principal {
	p := Principal{Subject: "users/" + c.Subject, Kind: KindUser, Username: c.PreferredUsername, Email: c.Email}
	if slices.Contains(c.Groups, PlatformAdminGroup) {
		p.Role = identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN
	}
	return p
}

func (i *Interceptor) deny(ctx context.Context, method string, err error) error {
	if i.Denied != nil {
		i.Denied(ctx, method, err)
	}
	return err
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// bearer extracts the credential of an Authorization value.
func bearer(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(h[len(scheme):]), true
}

// Bearer extracts the credential of an HTTP Authorization header value
// ("Bearer <key>", scheme case-insensitive).
func Bearer(h string) (string, bool) { return bearer(h) }

// CallerAddress is the client's network address (see serve.CallerAddress).
func CallerAddress(ctx context.Context) string { return serve.CallerAddress(ctx) }
