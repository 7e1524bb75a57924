package authn_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/grpcclient"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func hasher(t *testing.T) *authn.Hasher {
	t.Helper()
	h, err := authn.NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newKey(t *testing.T) string {
	t.Helper()
	k, err := authn.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func entry(h *authn.Hasher, id, key string, role identityv1.KeyIndexEntry_Role) *identityv1.KeyIndexEntry {
	e := &identityv1.KeyIndexEntry{KeyId: id, KeyHmac: h.Hash(key), Role: role, Prefix: authn.DisplayPrefix(key)}
	if role == identityv1.KeyIndexEntry_ROLE_PROJECT {
		e.Organization, e.Project = "orgs/acme", "orgs/acme/projects/web"
	}
	return e
}

func TestNewKey(t *testing.T) {
	t.Parallel()
	a, b := newKey(t), newKey(t)
	if a == b {
		t.Fatal("two keys are equal")
	}
	if !strings.HasPrefix(a, authn.KeyPrefix) || len(a) != 48 {
		t.Errorf("key %q: want moat_ and 48 characters", authn.DisplayPrefix(a))
	}
	if got := authn.DisplayPrefix(a); len(got) != 12 || !strings.HasPrefix(a, got) {
		t.Errorf("DisplayPrefix = %q", got)
	}
	if _, err := authn.NewHasher([]byte("short")); err == nil {
		t.Error("NewHasher accepted a short secret")
	}
}

func TestIndexAuthenticate(t *testing.T) {
	t.Parallel()
	h := hasher(t)
	ix := authn.NewIndex(h)
	if ix.Ready() {
		t.Fatal("empty index is Ready")
	}
	project, admin, expired, later := newKey(t), newKey(t), newKey(t), newKey(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	exp := entry(h, "k3", expired, identityv1.KeyIndexEntry_ROLE_PROJECT)
	exp.ExpireTime = timestamppb.New(now)
	ix.Replace(10, []*identityv1.KeyIndexEntry{
		entry(h, "k1", project, identityv1.KeyIndexEntry_ROLE_PROJECT),
		entry(h, "k2", admin, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN),
		exp,
	})
	if !ix.Ready() || ix.Version() != 10 || ix.Len() != 3 {
		t.Fatalf("after Replace: ready %v version %d len %d", ix.Ready(), ix.Version(), ix.Len())
	}

	p, err := ix.Authenticate(project, now)
	if err != nil {
		t.Fatalf("Authenticate(project key) = %v", err)
	}
	want := authn.Principal{Subject: "keys/k1", Kind: authn.KindAPIKey, KeyID: "k1", Prefix: authn.DisplayPrefix(project), Role: identityv1.KeyIndexEntry_ROLE_PROJECT,
		Organization: "orgs/acme", Project: "orgs/acme/projects/web"}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("principal mismatch (-want +got):\n%s", diff)
	}
	if p, err := ix.Authenticate(admin, now); err != nil || !p.IsPlatformAdmin() {
		t.Errorf("Authenticate(admin key) = %+v, %v", p, err)
	}
	for name, key := range map[string]string{
		"expired": expired, "unknown": later, "empty": "", "garbage": "Bearer x",
		"wrong prefix": "sk_" + project[3:], "bad character": project[:47] + "!",
	} {
		if _, err := ix.Authenticate(key, now); !errors.Is(err, authn.ErrUnauthenticated) {
			t.Errorf("Authenticate(%s) = %v, want ErrUnauthenticated", name, err)
		}
	}

	ix.Upsert(11, entry(h, "k4", later, identityv1.KeyIndexEntry_ROLE_PROJECT))
	if _, err := ix.Authenticate(later, now); err != nil {
		t.Errorf("key added by Upsert: %v", err)
	}
	ix.Remove(12, "k1")
	if _, err := ix.Authenticate(project, now); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Errorf("removed key: %v, want ErrUnauthenticated", err)
	}
	ix.Upsert(12, entry(h, "k1", project, identityv1.KeyIndexEntry_ROLE_PROJECT)) // stale: same version
	if _, err := ix.Authenticate(project, now); !errors.Is(err, authn.ErrUnauthenticated) {
		t.Errorf("a stale upsert brought a removed key back: %v", err)
	}
}

func TestIndexAllowedModels(t *testing.T) {
	t.Parallel()
	h := hasher(t)
	ix := authn.NewIndex(h)
	scoped, open := newKey(t), newKey(t)
	e := entry(h, "k1", scoped, identityv1.KeyIndexEntry_ROLE_PROJECT)
	e.AllowedModels = []string{"gpt-4o", "small"}
	ix.Replace(1, []*identityv1.KeyIndexEntry{e, entry(h, "k2", open, identityv1.KeyIndexEntry_ROLE_PROJECT)})
	e.AllowedModels[0] = "changed by the caller" // the index holds its own copy

	now := time.Now()
	p, err := ix.Authenticate(scoped, now)
	if err != nil {
		t.Fatalf("Authenticate(scoped key) = %v", err)
	}
	if diff := cmp.Diff([]string{"gpt-4o", "small"}, p.AllowedModels); diff != "" {
		t.Errorf("AllowedModels mismatch (-want +got):\n%s", diff)
	}
	q, err := ix.Authenticate(open, now)
	if err != nil {
		t.Fatalf("Authenticate(unscoped key) = %v", err)
	}
	if len(q.AllowedModels) != 0 {
		t.Errorf("unscoped key: AllowedModels = %q, want none", q.AllowedModels)
	}

	for _, tt := range []struct {
		name  string
		p     authn.Principal
		model string
		want  bool
	}{
		{"listed", p, "gpt-4o", true},
		{"listed second", p, "small", true},
		{"not listed", p, "gpt-4o-mini", false},
		{"case matters", p, "GPT-4o", false},
		{"empty model", p, "", false},
		{"unscoped", q, "anything", true},
		{"zero principal", authn.Principal{}, "anything", true},
	} {
		if got := tt.p.MayUseModel(tt.model); got != tt.want {
			t.Errorf("%s: MayUseModel(%q) = %v, want %v", tt.name, tt.model, got, tt.want)
		}
	}
}

func TestRequire(t *testing.T) {
	t.Parallel()
	const (
		admin  = identityv1.OrgRole_ORG_ROLE_ADMIN
		member = identityv1.OrgRole_ORG_ROLE_MEMBER
		none   = identityv1.OrgRole_ORG_ROLE_UNSPECIFIED
	)
	platform := authn.Principal{Kind: authn.KindUser, Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN}
	adminA := authn.Principal{Kind: authn.KindUser, Roles: map[string]identityv1.OrgRole{"orgs/org-a": admin, "orgs/org-c": member}}
	memberA := authn.Principal{Kind: authn.KindUser, Roles: map[string]identityv1.OrgRole{"orgs/org-a": member}}
	projectKey := authn.Principal{Kind: authn.KindAPIKey, Role: identityv1.KeyIndexEntry_ROLE_PROJECT, Organization: "orgs/org-a", Project: "orgs/org-a/projects/p1"}
	for _, tt := range []struct {
		name     string
		p        *authn.Principal
		resource string
		need     identityv1.OrgRole
		want     error
	}{
		{"no principal", nil, "orgs/org-a", member, authn.ErrUnauthenticated},
		{"platform admin, platform method", &platform, "", none, nil},
		{"platform admin, any org", &platform, "orgs/org-b/projects/x", admin, nil},
		{"platform admin, malformed name", &platform, "bogus", admin, nil},
		{"org admin, own org, admin method", &adminA, "orgs/org-a/projects/p1/keys/k", admin, nil},
		{"org admin, own org, member method", &adminA, "orgs/org-a", member, nil},
		{"org admin, other org", &adminA, "orgs/org-b/projects/p1", admin, authn.ErrPermissionDenied},
		{"org admin, org where member, admin method", &adminA, "orgs/org-c", admin, authn.ErrPermissionDenied},
		{"org admin, org where member, member method", &adminA, "orgs/org-c/members/u", member, nil},
		{"org admin, platform method", &adminA, "", none, authn.ErrPermissionDenied},
		{"org admin, name outside orgs", &adminA, "keys/x", admin, authn.ErrPermissionDenied},
		{"org admin, prefix of own org id", &adminA, "orgs/org-ab", member, authn.ErrPermissionDenied},
		{"org admin, bad org id", &adminA, "orgs/ORG-A", member, authn.ErrPermissionDenied},
		{"org admin, unspecified need", &adminA, "orgs/org-a", none, authn.ErrPermissionDenied},
		{"member, member method", &memberA, "orgs/org-a/projects/p1", member, nil},
		{"member, admin method", &memberA, "orgs/org-a/projects/p1", admin, authn.ErrPermissionDenied},
		{"member, other org", &memberA, "orgs/org-b", member, authn.ErrPermissionDenied},
		{"project key, own org", &projectKey, "orgs/org-a/projects/p1", member, authn.ErrPermissionDenied},
	} {
		ctx := context.Background()
		if tt.p != nil {
			ctx = authn.NewContext(ctx, *tt.p)
		}
		if err := authn.Require(ctx, tt.resource, tt.need); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("%s: Require(%q, %v) = %v, want %v", tt.name, tt.resource, tt.need, err, tt.want)
		}
	}
	if err := authn.RequirePlatformAdmin(authn.NewContext(context.Background(), adminA)); !errors.Is(err, authn.ErrPermissionDenied) {
		t.Errorf("RequirePlatformAdmin(org admin) = %v", err)
	}
	if err := authn.RequirePlatformAdmin(authn.NewContext(context.Background(), platform)); err != nil {
		t.Errorf("RequirePlatformAdmin(platform admin) = %v", err)
	}
}

func TestIndexMemberships(t *testing.T) {
	t.Parallel()
	h, err := authn.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	ix := authn.NewIndex(h)
	m := func(user, org string, role identityv1.OrgRole) *identityv1.MembershipEntry {
		return &identityv1.MembershipEntry{User: user, Organization: org, Role: role}
	}
	ix.Replace(10, nil,
		m("users/u1", "orgs/org-a", identityv1.OrgRole_ORG_ROLE_ADMIN),
		m("users/u1", "orgs/org-b", identityv1.OrgRole_ORG_ROLE_MEMBER),
		m("users/u2", "orgs/org-a", identityv1.OrgRole_ORG_ROLE_MEMBER))
	before := ix.Roles("users/u1")
	want := map[string]identityv1.OrgRole{"orgs/org-a": identityv1.OrgRole_ORG_ROLE_ADMIN, "orgs/org-b": identityv1.OrgRole_ORG_ROLE_MEMBER}
	if diff := cmp.Diff(want, before); diff != "" {
		t.Errorf("Roles(u1) after snapshot (-want +got):\n%s", diff)
	}
	ix.UpsertMembership(11, m("users/u1", "orgs/org-b", identityv1.OrgRole_ORG_ROLE_ADMIN))
	ix.RemoveMembership(12, m("users/u1", "orgs/org-a", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED))
	ix.UpsertMembership(9, m("users/u1", "orgs/org-c", identityv1.OrgRole_ORG_ROLE_ADMIN)) // older than the index: ignored
	if diff := cmp.Diff(map[string]identityv1.OrgRole{"orgs/org-b": identityv1.OrgRole_ORG_ROLE_ADMIN}, ix.Roles("users/u1")); diff != "" {
		t.Errorf("Roles(u1) after changes (-want +got):\n%s", diff)
	}
	// A Principal built before the changes keeps the roles it was given.
	if diff := cmp.Diff(want, before); diff != "" {
		t.Errorf("earlier Roles map changed (-want +got):\n%s", diff)
	}
	ix.RemoveMembership(13, m("users/u2", "orgs/org-a", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED))
	if got := ix.Roles("users/u2"); got != nil {
		t.Errorf("Roles(u2) after its last membership ended = %v, want nil", got)
	}
	ix.Replace(14, nil)
	if got := ix.Roles("users/u1"); got != nil {
		t.Errorf("Roles(u1) after an empty snapshot = %v, want nil", got)
	}
}

// fakeIdentity serves WatchKeyIndex from a channel of responses and echoes
// the caller's principal on ListApiKeys (as next_page_token), so the
// interceptor can be observed end to end.
type fakeIdentity struct {
	identityv1.UnimplementedIdentityServiceServer
	streams chan chan *identityv1.WatchKeyIndexResponse
}

func (f *fakeIdentity) WatchKeyIndex(_ *identityv1.WatchKeyIndexRequest, s grpc.ServerStreamingServer[identityv1.WatchKeyIndexResponse]) error {
	ch := make(chan *identityv1.WatchKeyIndexResponse, 16)
	f.streams <- ch
	for {
		select {
		case <-s.Context().Done():
			return nil
		case r, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "going away")
			}
			if err := s.Send(r); err != nil {
				return err
			}
		}
	}
}

func (f *fakeIdentity) ListApiKeys(ctx context.Context, _ *identityv1.ListApiKeysRequest) (*identityv1.ListApiKeysResponse, error) {
	p, _ := authn.FromContext(ctx)
	return &identityv1.ListApiKeysResponse{NextPageToken: p.Subject}, nil
}

type denial struct {
	method string
	code   codes.Code
}

func serveFake(t *testing.T, ic *authn.Interceptor) (*fakeIdentity, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(ic.Unary()), grpc.ChainStreamInterceptor(ic.Stream()))
	f := &fakeIdentity{streams: make(chan chan *identityv1.WatchKeyIndexResponse, 4)}
	identityv1.RegisterIdentityServiceServer(s, f)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return f, lis.Addr().String()
}

func TestInterceptor(t *testing.T) {
	t.Parallel()
	h := hasher(t)
	ix := authn.NewIndex(h)
	project, admin := newKey(t), newKey(t)
	ix.Replace(1, []*identityv1.KeyIndexEntry{
		entry(h, "k1", project, identityv1.KeyIndexEntry_ROLE_PROJECT),
		entry(h, "k2", admin, identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN),
	})
	var mu sync.Mutex
	var denied []denial
	ic := &authn.Interceptor{Auth: ix, Token: "internal-token-0123456789",
		Internal: []string{identityv1.IdentityService_WatchKeyIndex_FullMethodName},
		Denied: func(_ context.Context, m string, err error) {
			mu.Lock()
			defer mu.Unlock()
			denied = append(denied, denial{m, status.Code(err)})
		}}
	_, addr := serveFake(t, ic)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := identityv1.NewIdentityServiceClient(conn)
	with := func(auth string) context.Context {
		if auth == "" {
			return context.Background()
		}
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", auth)
	}

	tests := []struct {
		name     string
		auth     string
		wantCode codes.Code
		wantSub  string
	}{
		{"project key", "Bearer " + project, codes.OK, "keys/k1"},
		{"admin key, lowercase scheme", "bearer " + admin, codes.OK, "keys/k2"},
		{"no credentials", "", codes.Unauthenticated, ""},
		{"basic auth", "Basic dXNlcjpwYXNz", codes.Unauthenticated, ""},
		{"unknown key", "Bearer " + newKey(t), codes.Unauthenticated, ""},
	}
	for _, tt := range tests {
		resp, err := client.ListApiKeys(with(tt.auth), &identityv1.ListApiKeysRequest{})
		if got := status.Code(err); got != tt.wantCode {
			t.Errorf("%s: code %v, want %v", tt.name, got, tt.wantCode)
			continue
		}
		if err == nil && resp.GetNextPageToken() != tt.wantSub {
			t.Errorf("%s: principal %q, want %q", tt.name, resp.GetNextPageToken(), tt.wantSub)
		}
		if err != nil && strings.Contains(status.Convert(err).Message(), strings.TrimPrefix(tt.auth, "Bearer ")) && tt.auth != "" {
			t.Errorf("%s: the error quotes the credential", tt.name)
		}
	}

	// The internal stream wants the token, not a key.
	stream, err := client.WatchKeyIndex(with("Bearer "+admin), &identityv1.WatchKeyIndexRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("WatchKeyIndex with an admin key = %v, want Unauthenticated", err)
	}
	// Health is public.
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without credentials = %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	want := []denial{
		{identityv1.IdentityService_ListApiKeys_FullMethodName, codes.Unauthenticated},
		{identityv1.IdentityService_ListApiKeys_FullMethodName, codes.Unauthenticated},
		{identityv1.IdentityService_ListApiKeys_FullMethodName, codes.Unauthenticated},
		{identityv1.IdentityService_WatchKeyIndex_FullMethodName, codes.Unauthenticated},
	}
	if diff := cmp.Diff(want, denied, cmp.AllowUnexported(denial{})); diff != "" {
		t.Errorf("denials mismatch (-want +got):\n%s", diff)
	}
}

func TestFollow(t *testing.T) {
	t.Parallel()
	h := hasher(t)
	token := "internal-token-0123456789"
	f, addr := serveFake(t, &authn.Interceptor{Auth: authn.NewIndex(h), Token: token,
		Internal: []string{identityv1.IdentityService_WatchKeyIndex_FullMethodName}})
	conn, err := grpcclient.Dial(addr, nil, token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ix := authn.NewIndex(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- authn.Follow(ctx, identityv1.NewIdentityServiceClient(conn), ix, nil) }()

	k1, k2 := newKey(t), newKey(t)
	now := time.Now()
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	works := func(k string) bool { _, err := ix.Authenticate(k, now); return err == nil }

	role := func(user, org string) identityv1.OrgRole { return ix.Roles(user)[org] }
	membership := func(user string, role identityv1.OrgRole) *identityv1.MembershipEntry {
		return &identityv1.MembershipEntry{User: user, Organization: "orgs/acme", Role: role}
	}

	s1 := <-f.streams
	s1 <- &identityv1.WatchKeyIndexResponse{Version: 5, Event: &identityv1.WatchKeyIndexResponse_Snapshot{Snapshot: &identityv1.KeyIndexSnapshot{
		Entries:     []*identityv1.KeyIndexEntry{entry(h, "k1", k1, identityv1.KeyIndexEntry_ROLE_PROJECT)},
		Memberships: []*identityv1.MembershipEntry{membership("users/ann", identityv1.OrgRole_ORG_ROLE_MEMBER)}}}}
	eventually("snapshot", func() bool {
		return ix.Ready() && works(k1) && role("users/ann", "orgs/acme") == identityv1.OrgRole_ORG_ROLE_MEMBER
	})
	s1 <- &identityv1.WatchKeyIndexResponse{Version: 6, Event: &identityv1.WatchKeyIndexResponse_UpsertMembership{
		UpsertMembership: membership("users/ann", identityv1.OrgRole_ORG_ROLE_ADMIN)}}
	eventually("membership change", func() bool { return role("users/ann", "orgs/acme") == identityv1.OrgRole_ORG_ROLE_ADMIN })
	s1 <- &identityv1.WatchKeyIndexResponse{Version: 7, Event: &identityv1.WatchKeyIndexResponse_RemoveMembership{
		RemoveMembership: membership("users/ann", identityv1.OrgRole_ORG_ROLE_UNSPECIFIED)}}
	eventually("membership end", func() bool { return ix.Roles("users/ann") == nil })
	s1 <- &identityv1.WatchKeyIndexResponse{Version: 8, Event: &identityv1.WatchKeyIndexResponse_Upsert{Upsert: entry(h, "k2", k2, identityv1.KeyIndexEntry_ROLE_PROJECT)}}
	eventually("upsert", func() bool { return works(k2) })
	s1 <- &identityv1.WatchKeyIndexResponse{Version: 9, Event: &identityv1.WatchKeyIndexResponse_RemoveKeyId{RemoveKeyId: "k1"}}
	eventually("removal", func() bool { return !works(k1) })

	// The stream breaks: the index keeps serving, and the next stream's
	// snapshot replaces it.
	close(s1)
	if !works(k2) {
		t.Fatal("index lost its keys when the stream broke")
	}
	s2 := <-f.streams
	s2 <- &identityv1.WatchKeyIndexResponse{Version: 12, Event: &identityv1.WatchKeyIndexResponse_Snapshot{Snapshot: &identityv1.KeyIndexSnapshot{
		Entries:     []*identityv1.KeyIndexEntry{entry(h, "k1", k1, identityv1.KeyIndexEntry_ROLE_PROJECT)},
		Memberships: []*identityv1.MembershipEntry{membership("users/bob", identityv1.OrgRole_ORG_ROLE_ADMIN)}}}}
	eventually("fresh snapshot after reconnect", func() bool {
		return works(k1) && !works(k2) && ix.Version() == 12 && role("users/bob", "orgs/acme") == identityv1.OrgRole_ORG_ROLE_ADMIN
	})

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow = %v", err)
	}
}

func TestConfigOIDC(t *testing.T) {
	t.Parallel()
	base := authn.Config{KeySecret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", InternalToken: "internal-token-for-tests", IdentityGRPC: "127.0.0.1:1"}
	tests := []struct {
		name, issuer, audience string
		wantErr                string // "" means valid
		wantVerifier           bool
	}{
		{"no issuer: API keys only", "", "moat", "", false},
		{"no issuer, no audience", "", "", "", false},
		{"https issuer", "https://sso.example.com/realms/moat", "moat", "", true},
		{"http issuer (local)", "http://127.0.0.1:8180/realms/moat", "moat", "", true},
		{"relative issuer", "/realms/moat", "moat", "MOAT_OIDC_ISSUER must be an absolute http(s) URL", false},
		{"host only", "sso.example.com", "moat", "MOAT_OIDC_ISSUER must be an absolute http(s) URL", false},
		{"other scheme", "ftp://sso.example.com/realms/moat", "moat", "MOAT_OIDC_ISSUER must be an absolute http(s) URL", false},
		{"user info", "https://u:p@sso.example.com/realms/moat", "moat", "MOAT_OIDC_ISSUER must be an absolute http(s) URL", false},
		{"issuer without audience", "https://sso.example.com/realms/moat", "", "MOAT_OIDC_AUDIENCE is required with MOAT_OIDC_ISSUER", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base
			c.OIDCIssuer, c.OIDCAudience = tt.issuer, tt.audience
			err := c.Validate(true)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				v, err := c.Verifier(nil)
				if err != nil || (v != nil) != tt.wantVerifier {
					t.Errorf("Verifier() = %v, %v; want a verifier: %v", v, err, tt.wantVerifier)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want it to say %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "u:p@") {
				t.Errorf("Validate() quotes the issuer's user info: %v", err)
			}
		})
	}
}
