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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moat-ai/moat/libs/authn"
	billingv1 "github.com/moat-ai/moat/proto/gen/go/moat/billing/v1"
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

// mayRead states the API's decision independently of authn.Require: usage
// is for platform admins and the admins of the parent's organization.
func (c tenant) mayRead(parent string) bool {
	return c.platform || c.roles[authn.OrganizationOf(parent)] == identityv1.OrgRole_ORG_ROLE_ADMIN
}

func (f *fixture) tenants() []tenant {
	var out []tenant
	for _, u := range tenancyUsers {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer token-of-"+u.sub)
		out = append(out, tenant{name: u.label, ctx: ctx, roles: u.roles, platform: u.platform})
	}
	return append(out, tenant{name: "org A project key", ctx: as(f.projectKey)})
}

// totals sums the fixture's entries under parent as GetUsageTotals does.
func (f *fixture) totals(parent string) *billingv1.UsageTotals {
	t := &billingv1.UsageTotals{CurrencyCode: "USD"}
	for _, e := range f.entries {
		if e.Organization != parent && e.Project != parent {
			continue
		}
		t.EntryCount++
		t.InputTokens += e.InputTokens
		t.CacheReadInputTokens += e.CacheReadInputTokens
		t.CacheWriteInputTokens += e.CacheWriteInputTokens
		t.OutputTokens += e.OutputTokens
		t.ReasoningTokens += e.ReasoningTokens
		t.CostMicros += e.CostMicros
		if !e.Priced {
			t.UnpricedCount++
		}
		if e.UsageEstimated {
			t.EstimatedCount++
		}
	}
	return t
}

// RELIABILITY 15 for billing: every caller against every method, on
// every scope of org A and org B. Allowed calls return exactly the
// scope's usage and nothing of the other tenant; refused calls get
// PERMISSION_DENIED with authn.DeniedMessage and no response.
func TestCrossTenantAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.client
	methods := []struct {
		name string
		call func(ctx context.Context, parent string) (proto.Message, error)
		want func(parent string) proto.Message
	}{
		{"ListUsageEntries",
			func(ctx context.Context, parent string) (proto.Message, error) {
				resp, err := c.ListUsageEntries(ctx, &billingv1.ListUsageEntriesRequest{Parent: parent, PageSize: 1000})
				return resp, err
			},
			func(parent string) proto.Message {
				return &billingv1.ListUsageEntriesResponse{UsageEntries: f.want(parent)}
			}},
		{"GetUsageTotals",
			func(ctx context.Context, parent string) (proto.Message, error) {
				resp, err := c.GetUsageTotals(ctx, &billingv1.GetUsageTotalsRequest{Parent: parent})
				return resp, err
			},
			func(parent string) proto.Message {
				return &billingv1.GetUsageTotalsResponse{Totals: f.totals(parent)}
			}},
	}
	covered := map[string]bool{}
	parents := []string{orgA, orgA + "/projects/web", orgB, orgB + "/projects/web"}
	for _, m := range methods {
		covered[m.name] = true
		for _, parent := range parents {
			for _, caller := range f.tenants() {
				t.Run(fmt.Sprintf("%s of %s by %s", m.name, parent, caller.name), func(t *testing.T) {
					t.Parallel()
					resp, err := m.call(caller.ctx, parent)
					if !caller.mayRead(parent) {
						checkRefused(t, resp, err)
						return
					}
					if err != nil {
						t.Fatalf("allowed call = %v", err)
					}
					if diff := cmp.Diff(m.want(parent), resp, protocmp.Transform(), ignoreRecordTime); diff != "" {
						t.Errorf("mismatch (-want +got):\n%s", diff)
					}
					other := orgB
					if authn.OrganizationOf(parent) == orgB {
						other = orgA
					}
					text, merr := protojson.Marshal(resp)
					if merr != nil {
						t.Fatal(merr)
					}
					if strings.Contains(string(text), other) {
						t.Errorf("usage of %s shows %s: %s", parent, other, text)
					}
				})
			}
		}
	}
	for _, m := range billingv1.BillingService_ServiceDesc.Methods {
		if !covered[m.MethodName] {
			t.Errorf("method %s is not in the cross-tenant table", m.MethodName)
		}
	}
	if n := len(billingv1.BillingService_ServiceDesc.Streams); n != 0 {
		t.Errorf("%d streams are not in the cross-tenant table", n)
	}
}

// Names that are not plainly org A's do not open org B's usage to org A's
// admin: refused, or rejected as malformed without naming org B.
func TestCrossTenantOddParents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var alice tenant
	for _, c := range f.tenants() {
		if c.name == "org A admin" {
			alice = c
		}
	}
	tests := []struct {
		parent string
		want   codes.Code
	}{
		{"", codes.PermissionDenied},
		{"orgs/", codes.PermissionDenied},
		{orgB + "/", codes.PermissionDenied},
		{orgB + "/projects/web/", codes.PermissionDenied},
		{"orgs/UMBRELLA", codes.PermissionDenied},
		{orgB + " ", codes.PermissionDenied},
		{"/" + orgB, codes.PermissionDenied},
		{orgA + "/../umbrella", codes.InvalidArgument},
		{orgA + "/projects/../../umbrella", codes.InvalidArgument},
		{orgA + "/projects/web/../../../umbrella/projects/web", codes.InvalidArgument},
		{orgA + "/", codes.InvalidArgument},
		{orgA + "/providers/p1", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.parent), func(t *testing.T) {
			t.Parallel()
			list, err := f.client.ListUsageEntries(alice.ctx, &billingv1.ListUsageEntriesRequest{Parent: tt.parent})
			checkRefusedWith(t, list, err, tt.want)
			totals, err := f.client.GetUsageTotals(alice.ctx, &billingv1.GetUsageTotalsRequest{Parent: tt.parent})
			checkRefusedWith(t, totals, err, tt.want)
		})
	}
}

// A page token names its parent: org A's admin cannot page into org B
// with one, and org B's admin cannot use org A's token anywhere.
func TestCrossTenantPageToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	callers := map[string]tenant{}
	for _, c := range f.tenants() {
		callers[c.name] = c
	}
	first, err := f.client.ListUsageEntries(callers["org A admin"].ctx, &billingv1.ListUsageEntriesRequest{Parent: orgA, PageSize: 1})
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
		resp, err := f.client.ListUsageEntries(callers[tt.caller].ctx, &billingv1.ListUsageEntriesRequest{Parent: tt.parent, PageToken: token})
		if status.Code(err) != tt.want || resp != nil {
			t.Errorf("ListUsageEntries(%s, org A's token) by %s = %v, %v; want %v", tt.parent, tt.caller, resp, err, tt.want)
		}
		if text := status.Convert(err).String(); strings.Contains(text, orgA) && tt.parent != orgA {
			t.Errorf("refusal shows org A: %s", text)
		}
	}
}

func checkRefused(t *testing.T, resp proto.Message, err error) {
	t.Helper()
	checkRefusedWith(t, resp, err, codes.PermissionDenied)
}

// checkRefusedWith checks a refused call: code, no response, and for
// PERMISSION_DENIED the fixed message without details; no refusal names
// org B.
func checkRefusedWith(t *testing.T, resp proto.Message, err error, want codes.Code) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want || (resp != nil && resp.ProtoReflect().IsValid()) {
		t.Fatalf("refused call = %v, %v; want %v and no response", resp, err, want)
	}
	if want == codes.PermissionDenied && (st.Message() != authn.DeniedMessage || len(st.Details()) != 0) {
		t.Errorf("refusal = %v, want authn.DeniedMessage and no details", st.Proto())
	}
	if text := st.String(); strings.Contains(text, orgB) {
		t.Errorf("refusal names org B: %s", text)
	}
}
