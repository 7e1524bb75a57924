package grpcapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moat-ai/moat/libs/authn"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// The two tenants of the cross-tenant tests (RELIABILITY 15): the
// fixture's project key belongs to orgA.
const (
	orgA = "orgs/acme"
	orgB = "orgs/umbrella"
)

// tenancyUsers are the OIDC users of the cross-tenant tests, by their sub.
var tenancyUsers = []struct {
	label    string
	sub      string
	roles    map[string]identityv1.OrgRole
	platform bool // in the platform-admins group
}{
	{label: "org A admin", sub: "alice", roles: map[string]identityv1.OrgRole{orgA: identityv1.OrgRole_ORG_ROLE_ADMIN}},
	{label: "org A member", sub: "carol", roles: map[string]identityv1.OrgRole{orgA: identityv1.OrgRole_ORG_ROLE_MEMBER}},
	{label: "org B admin", sub: "bob", roles: map[string]identityv1.OrgRole{orgB: identityv1.OrgRole_ORG_ROLE_ADMIN}},
	{label: "platform admin", sub: "root", platform: true},
}

// tenancyMemberships are the key-index memberships of tenancyUsers.
func tenancyMemberships() []*identityv1.MembershipEntry {
	var out []*identityv1.MembershipEntry
	for _, u := range tenancyUsers {
		for org, role := range u.roles {
			out = append(out, &identityv1.MembershipEntry{User: "users/" + u.sub, Organization: org, Role: role})
		}
	}
	return out
}

// fakeTokens is an authn.Verifier that accepts fixed bearer strings. The
// real OIDC verification is tested in libs/authn against Keycloak; here
// only what the interceptor makes of verified claims matters.
type fakeTokens map[string]authn.TokenClaims

func (f fakeTokens) Verify(_ context.Context, raw string) (authn.TokenClaims, error) {
	c, ok := f[raw]
	if !ok {
		return authn.TokenClaims{}, authn.ErrUnauthenticated
	}
	return c, nil
}

// tenancyTokens accepts "token-of-{sub}" for every user of tenancyUsers.
func tenancyTokens() fakeTokens {
	f := fakeTokens{}
	for _, u := range tenancyUsers {
		c := authn.TokenClaims{Subject: u.sub, PreferredUsername: u.sub}
		if u.platform {
			c.Groups = []string{authn.PlatformAdminGroup}
		}
		f["token-of-"+u.sub] = c
	}
	return f
}

// tenant is one caller of the cross-tenant table.
type tenant struct {
	name     string
	ctx      context.Context
	roles    map[string]identityv1.OrgRole
	platform bool
}

// mayRead states the API's decision independently of authn.Require: an
// audit log is for platform admins and the admins of its organization.
func (c tenant) mayRead(parent string) bool {
	return c.platform || c.roles[authn.OrganizationOf(parent)] == identityv1.OrgRole_ORG_ROLE_ADMIN
}

func (f *fixture) tenants() map[string]tenant {
	out := map[string]tenant{"org A project key": {name: "org A project key", ctx: as(f.projectKey)}}
	for _, u := range tenancyUsers {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer token-of-"+u.sub)
		out[u.label] = tenant{name: u.label, ctx: ctx, roles: u.roles, platform: u.platform}
	}
	return out
}

// RELIABILITY 15 for audit: every caller against ListAuditEvents of org A
// and org B. Allowed calls return exactly that organization's records and
// nothing of the other tenant; refused calls get PERMISSION_DENIED with
// authn.DeniedMessage and no response.
func TestCrossTenantAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, m := range auditv1.AuditService_ServiceDesc.Methods {
		if m.MethodName != "ListAuditEvents" {
			t.Errorf("method %s is not in the cross-tenant table", m.MethodName)
		}
	}
	if n := len(auditv1.AuditService_ServiceDesc.Streams); n != 0 {
		t.Errorf("%d streams are not in the cross-tenant table", n)
	}
	for _, parent := range []string{orgA, orgB} {
		other := orgB
		if parent == orgB {
			other = orgA
		}
		for _, caller := range f.tenants() {
			t.Run(fmt.Sprintf("ListAuditEvents of %s by %s", parent, caller.name), func(t *testing.T) {
				t.Parallel()
				resp, err := f.client.ListAuditEvents(caller.ctx, &auditv1.ListAuditEventsRequest{Parent: parent, PageSize: 1000})
				if !caller.mayRead(parent) {
					checkRefused(t, resp, err, codes.PermissionDenied)
					return
				}
				if err != nil {
					t.Fatalf("allowed call = %v", err)
				}
				want := &auditv1.ListAuditEventsResponse{AuditEvents: f.want(parent)}
				if diff := cmp.Diff(want, resp, protocmp.Transform(), protocmp.IgnoreFields(&auditv1.AuditEvent{}, "record_time")); diff != "" {
					t.Errorf("mismatch (-want +got):\n%s", diff)
				}
				text, merr := protojson.Marshal(resp)
				if merr != nil {
					t.Fatal(merr)
				}
				if strings.Contains(string(text), other) {
					t.Errorf("audit log of %s shows %s: %s", parent, other, text)
				}
			})
		}
	}
}

// Names that are not plainly org A's do not open org B's log, or the
// platform-level records that belong to no organization, to org A's
// admin: refused, or rejected as malformed without naming org B.
func TestCrossTenantOddParents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	alice := f.tenants()["org A admin"]
	tests := []struct {
		parent string
		want   codes.Code
	}{
		{"", codes.PermissionDenied},
		{"orgs/", codes.PermissionDenied},
		{"auditEvents", codes.PermissionDenied},
		{orgB + "/projects/web", codes.PermissionDenied},
		{orgB + "/", codes.PermissionDenied},
		{"orgs/UMBRELLA", codes.PermissionDenied},
		{orgB + " ", codes.PermissionDenied},
		{" " + orgB, codes.PermissionDenied},
		{"/" + orgB, codes.PermissionDenied},
		{orgA + "/../umbrella", codes.InvalidArgument},
		{orgA + "/", codes.InvalidArgument},
		{orgA + "/projects/web", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.parent), func(t *testing.T) {
			t.Parallel()
			resp, err := f.client.ListAuditEvents(alice.ctx, &auditv1.ListAuditEventsRequest{Parent: tt.parent})
			checkRefused(t, resp, err, tt.want)
		})
	}
}

// A page token names its parent: org A's admin cannot page into org B
// with one, and org B's admin cannot use org A's token anywhere.
func TestCrossTenantPageToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	callers := f.tenants()
	first, err := f.client.ListAuditEvents(callers["org A admin"].ctx, &auditv1.ListAuditEventsRequest{Parent: orgA, PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page of org A = %v, %v; want a next page", first, err)
	}
	token := first.GetNextPageToken()
	tests := []struct {
		caller, parent string
		want           codes.Code
	}{
		{"org A admin", orgB, codes.PermissionDenied},
		{"org B admin", orgA, codes.PermissionDenied},
		{"org B admin", orgB, codes.InvalidArgument},
		{"platform admin", orgB, codes.InvalidArgument},
	}
	for _, tt := range tests {
		resp, err := f.client.ListAuditEvents(callers[tt.caller].ctx, &auditv1.ListAuditEventsRequest{Parent: tt.parent, PageToken: token})
		if status.Code(err) != tt.want || resp != nil {
			t.Errorf("ListAuditEvents(%s, org A's token) by %s = %v, %v; want %v", tt.parent, tt.caller, resp, err, tt.want)
		}
		if text := status.Convert(err).String(); strings.Contains(text, orgA) && tt.parent != orgA {
			t.Errorf("refusal shows org A: %s", text)
		}
	}
}

// checkRefused checks a refused call: code, no response, and for
// PERMISSION_DENIED the fixed message without details; no refusal names
// org B.
func checkRefused(t *testing.T, resp *auditv1.ListAuditEventsResponse, err error, want codes.Code) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want || resp != nil {
		t.Fatalf("refused call = %v, %v; want %v and no response", resp, err, want)
	}
	if want == codes.PermissionDenied && (st.Message() != authn.DeniedMessage || len(st.Details()) != 0) {
		t.Errorf("refusal = %v, want authn.DeniedMessage and no details", st.Proto())
	}
	if text := st.String(); strings.Contains(text, orgB) {
		t.Errorf("refusal names org B: %s", text)
	}
}
