package grpcapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

// need is the least a caller must hold to call a method.
type need int

const (
	needPlatform need = iota // platform admins only
	needAdmin                // an admin of the organization the request names
	needMember               // any member of the organization the request names
)

// tenant is one caller of the cross-tenant tables.
type tenant struct {
	name     string
	ctx      context.Context
	subject  string
	roles    map[string]identityv1.OrgRole
	platform bool
}

// may states the authorization decisions of the API independently of
// authn.Require, so that a wrong check there shows up here.
func (c tenant) may(n need, org string) bool {
	if c.platform {
		return true
	}
	switch n {
	case needAdmin:
		return c.roles[org] == identityv1.OrgRole_ORG_ROLE_ADMIN
	case needMember:
		return c.roles[org] == identityv1.OrgRole_ORG_ROLE_ADMIN || c.roles[org] == identityv1.OrgRole_ORG_ROLE_MEMBER
	}
	return false
}

// tenants are orgA's admin, orgA's member, orgB's admin and a platform
// admin (OIDC users), and the project key of orgA.
func (h *harness) tenants() []tenant {
	var out []tenant
	for _, u := range tenancyUsers {
		out = append(out, tenant{name: u.label, ctx: asUser(u.sub), subject: "users/" + u.sub, roles: u.roles, platform: u.platform})
	}
	return append(out, tenant{name: "org A project key", ctx: h.project, subject: projectSubject})
}

func (h *harness) tenant(t *testing.T, name string) tenant {
	t.Helper()
	for _, c := range h.tenants() {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no tenant %q", name)
	return tenant{}
}

func orgLabel(org string) string {
	switch org {
	case orgA:
		return "org A"
	case orgB:
		return "org B"
	}
	return "the platform"
}

// call is one RPC with its request bound; it returns the response as a
// proto.Message (a typed nil on error, see isNil).
type call func(context.Context) (proto.Message, error)

func msg[M proto.Message](m M, err error) (proto.Message, error) { return m, err }

// isNil reports whether m is nil, typed nil included.
func isNil(m proto.Message) bool { return m == nil || !m.ProtoReflect().IsValid() }

// seeder creates fixtures as the platform-admin key, with fresh ids so
// that the rows of a table stay independent.
type seeder struct {
	h *harness
	n int
}

func (s *seeder) id(kind string) string {
	s.n++
	return fmt.Sprintf("%s-%d", kind, s.n)
}

func (s *seeder) must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("fixture %s: %v", what, err)
	}
}

// organization creates orgs/{id}, a fresh one for "".
func (s *seeder) organization(t *testing.T, id string) string {
	t.Helper()
	if id == "" {
		id = s.id("org")
	}
	_, err := s.h.client.CreateOrganization(s.h.admin, &configv1.CreateOrganizationRequest{OrganizationId: id,
		Organization: &configv1.Organization{DisplayName: "Org " + id}})
	s.must(t, "organization "+id, err)
	return "orgs/" + id
}

// project creates {org}/projects/{id}, a fresh one for "".
func (s *seeder) project(t *testing.T, org, id string) string {
	t.Helper()
	if id == "" {
		id = s.id("project")
	}
	_, err := s.h.client.CreateProject(s.h.admin, &configv1.CreateProjectRequest{Parent: org, ProjectId: id,
		Project: &configv1.Project{DisplayName: "Project " + id}})
	s.must(t, org+" project "+id, err)
	return org + "/projects/" + id
}

// provider creates {org}/providers/{id} with a credential, a fresh one for "".
func (s *seeder) provider(t *testing.T, org, id string) string {
	t.Helper()
	if id == "" {
		id = s.id("provider")
	}
	_, err := s.h.client.CreateProvider(s.h.admin, &configv1.CreateProviderRequest{Parent: org, ProviderId: id, Provider: &configv1.Provider{
		Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com/v1", Credential: "sk-tenancy-" + id}})
	s.must(t, org+" provider "+id, err)
	return org + "/providers/" + id
}

// route creates {project}/routes/{id} to provider, a fresh one for "".
func (s *seeder) route(t *testing.T, project, id, provider string) string {
	t.Helper()
	if id == "" {
		id = s.id("route")
	}
	_, err := s.h.client.CreateRoute(s.h.admin, &configv1.CreateRouteRequest{Parent: project, RouteId: id, Route: &configv1.Route{
		Model: "model-" + id, Provider: provider, UpstreamModel: "upstream-" + id}})
	s.must(t, project+" route "+id, err)
	return project + "/routes/" + id
}

// seedTenants gives orgA and orgB each project web, provider openai and
// route gpt (web to openai).
func (s *seeder) seedTenants(t *testing.T) {
	t.Helper()
	for _, org := range []string{orgA, orgB} {
		s.organization(t, strings.TrimPrefix(org, "orgs/"))
		web := s.project(t, org, "web")
		openai := s.provider(t, org, "openai")
		s.route(t, web, "gpt", openai)
	}
}

// snapshot is the whole configuration, as gateways receive it.
func (h *harness) snapshot(t *testing.T) *configv1.WatchConfigResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(h.internal)
	defer cancel()
	stream, err := h.client.WatchConfig(ctx, &configv1.WatchConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// of returns the resources of snap in org (the organization included).
func of(snap *configv1.WatchConfigResponse, org string) []*configv1.ConfigResource {
	var out []*configv1.ConfigResource
	for _, r := range snap.GetSnapshot().GetResources() {
		if n := resourceName(r); n == org || strings.HasPrefix(n, org+"/") {
			out = append(out, r)
		}
	}
	return out
}

// tenancyOp is one RPC of the cross-tenant table. prepare runs before the
// call, as the platform-admin key: it creates what the call needs in org
// and returns the name the request targets (the parent of a create, ""
// for platform-level methods) and the call. Destructive calls act on fresh
// resources, so that an allowed delete leaves the next row its fixtures.
type tenancyOp struct {
	method string
	need   need
	// platformLevel methods are about no one organization: they are called
	// once per caller, with org "".
	platformLevel bool
	prepare       func(t *testing.T, org string, allowed bool) (target string, c call)
}

func configOps(h *harness, s *seeder) []tenancyOp {
	c := h.client
	return []tenancyOp{
		{"CreateOrganization", needPlatform, true, func(*testing.T, string, bool) (string, call) {
			id := s.id("new")
			return "", func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: id}))
			}
		}},
		{"ListOrganizations", needPlatform, true, func(*testing.T, string, bool) (string, call) {
			return "", func(ctx context.Context) (proto.Message, error) {
				return msg(c.ListOrganizations(ctx, &configv1.ListOrganizationsRequest{}))
			}
		}},
		{"GetOrganization", needMember, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: org}))
			}
		}},
		{"UpdateOrganization", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			o := &configv1.Organization{Name: org, DisplayName: s.id("renamed")}
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: o, UpdateMask: mask("display_name")}))
			}
		}},
		// Only platform admins may delete an organization, and only an
		// empty one: the allowed call deletes a fresh organization, the
		// refused ones aim at the tenants themselves.
		{"DeleteOrganization", needPlatform, false, func(t *testing.T, org string, allowed bool) (string, call) {
			if allowed {
				org = s.organization(t, "")
			}
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.DeleteOrganization(ctx, &configv1.DeleteOrganizationRequest{Name: org}))
			}
		}},
		{"CreateProject", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			id := s.id("project")
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: org, ProjectId: id}))
			}
		}},
		{"GetProject", needMember, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org + "/projects/web", func(ctx context.Context) (proto.Message, error) {
				return msg(c.GetProject(ctx, &configv1.GetProjectRequest{Name: org + "/projects/web"}))
			}
		}},
		{"ListProjects", needMember, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.ListProjects(ctx, &configv1.ListProjectsRequest{Parent: org}))
			}
		}},
		{"UpdateProject", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			p := &configv1.Project{Name: org + "/projects/web", DisplayName: s.id("renamed")}
			return p.Name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: p, UpdateMask: mask("display_name")}))
			}
		}},
		{"DeleteProject", needAdmin, false, func(t *testing.T, org string, _ bool) (string, call) {
			name := s.project(t, org, "")
			return name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: name}))
			}
		}},
		{"CreateProvider", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			id := s.id("provider")
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: org, ProviderId: id, Provider: &configv1.Provider{
					Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com/v1", Credential: "sk-" + id}}))
			}
		}},
		{"GetProvider", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org + "/providers/openai", func(ctx context.Context) (proto.Message, error) {
				return msg(c.GetProvider(ctx, &configv1.GetProviderRequest{Name: org + "/providers/openai"}))
			}
		}},
		{"ListProviders", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org, func(ctx context.Context) (proto.Message, error) {
				return msg(c.ListProviders(ctx, &configv1.ListProvidersRequest{Parent: org}))
			}
		}},
		{"UpdateProvider", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			p := &configv1.Provider{Name: org + "/providers/openai", DisplayName: s.id("renamed")}
			return p.Name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: p, UpdateMask: mask("display_name")}))
			}
		}},
		{"DeleteProvider", needAdmin, false, func(t *testing.T, org string, _ bool) (string, call) {
			name := s.provider(t, org, "")
			return name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: name}))
			}
		}},
		{"CreateRoute", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			id := s.id("route")
			return org + "/projects/web", func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: org + "/projects/web", RouteId: id, Route: &configv1.Route{
					Model: id, Provider: org + "/providers/openai", UpstreamModel: "upstream"}}))
			}
		}},
		{"GetRoute", needMember, false, func(_ *testing.T, org string, _ bool) (string, call) {
			name := org + "/projects/web/routes/gpt"
			return name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.GetRoute(ctx, &configv1.GetRouteRequest{Name: name}))
			}
		}},
		{"ListRoutes", needMember, false, func(_ *testing.T, org string, _ bool) (string, call) {
			return org + "/projects/web", func(ctx context.Context) (proto.Message, error) {
				return msg(c.ListRoutes(ctx, &configv1.ListRoutesRequest{Parent: org + "/projects/web"}))
			}
		}},
		{"UpdateRoute", needAdmin, false, func(_ *testing.T, org string, _ bool) (string, call) {
			r := &configv1.Route{Name: org + "/projects/web/routes/gpt", UpstreamModel: s.id("upstream")}
			return r.Name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: r, UpdateMask: mask("upstream_model")}))
			}
		}},
		{"DeleteRoute", needAdmin, false, func(t *testing.T, org string, _ bool) (string, call) {
			name := s.route(t, org+"/projects/web", "", org+"/providers/openai")
			return name, func(ctx context.Context) (proto.Message, error) {
				return msg(c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: name}))
			}
		}},
	}
}

// RELIABILITY 15 for config: every caller against every method, on org
// A's and org B's resources. Allowed calls succeed and show nothing of the
// other tenant, and change nothing of it; refused calls get
// PERMISSION_DENIED with authn.DeniedMessage and no response, change
// nothing, and (mutations) leave exactly one DENIED audit record.
//
// The rows run one after another: each reads the audit outbox and the
// configuration before and after its call, and a concurrent row would
// show up in both.
func TestCrossTenantAccess(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	s := &seeder{h: h}
	s.seedTenants(t)
	ops := configOps(h, s)

	covered := map[string]bool{}
	for _, op := range ops {
		covered[op.method] = true
		orgs := []string{orgA, orgB}
		if op.platformLevel {
			orgs = []string{""}
		}
		for _, org := range orgs {
			for _, c := range h.tenants() {
				allowed := c.may(op.need, org)
				t.Run(fmt.Sprintf("%s on %s by %s", op.method, orgLabel(org), c.name), func(t *testing.T) {
					target, call := op.prepare(t, org, allowed)
					before, audits := h.snapshot(t), len(h.audits(t))
					resp, err := call(c.ctx)
					after, records := h.snapshot(t), h.audits(t)[audits:]
					mutating := grpcapi.Mutating("/moat.config.v1.ConfigService/" + op.method)
					if allowed {
						checkAllowed(t, org, resp, err, before, after)
					} else {
						checkRefused(t, resp, err, codes.PermissionDenied, before, after)
					}
					switch {
					case !mutating && len(records) != 0:
						t.Errorf("a read left %d audit records, want none", len(records))
					case mutating:
						checkOneAudit(t, records, c.subject, op.method, target, allowed, codes.PermissionDenied)
					}
				})
			}
		}
	}
	for _, m := range configv1.ConfigService_ServiceDesc.Methods {
		if !covered[m.MethodName] {
			t.Errorf("method %s is not in the cross-tenant table", m.MethodName)
		}
	}

	// The one stream, WatchConfig, is for Moat's services: every user and
	// key is refused before it reads anything.
	for _, st := range configv1.ConfigService_ServiceDesc.Streams {
		if st.StreamName != "WatchConfig" {
			t.Errorf("stream %s is not in the cross-tenant table", st.StreamName)
		}
	}
	for _, c := range h.tenants() {
		stream, err := h.client.WatchConfig(c.ctx, &configv1.WatchConfigRequest{})
		var got *configv1.WatchConfigResponse
		if err == nil {
			got, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated || got != nil {
			t.Errorf("WatchConfig by %s = %v, %v; want Unauthenticated and nothing", c.name, got, err)
		}
	}
}

// checkAllowed checks an allowed call on org ("" for platform-level): it
// succeeded, its response names nothing of the other tenant, and nothing
// of a tenant it does not target changed.
func checkAllowed(t *testing.T, org string, resp proto.Message, err error, before, after *configv1.WatchConfigResponse) {
	t.Helper()
	if err != nil || isNil(resp) {
		t.Fatalf("allowed call = %v, %v; want success", resp, err)
	}
	for _, other := range []string{orgA, orgB} {
		if other == org {
			continue
		}
		if org != "" {
			text, merr := protojson.Marshal(resp)
			if merr != nil {
				t.Fatal(merr)
			}
			if strings.Contains(string(text), other) {
				t.Errorf("response to a call on %s shows %s: %s", org, other, text)
			}
		}
		if diff := cmp.Diff(of(before, other), of(after, other), protocmp.Transform()); diff != "" {
			t.Errorf("a call on %s changed %s (-before +after):\n%s", orgLabel(org), other, diff)
		}
	}
}

// checkRefused checks a refused call: code, the fixed message with no
// details, no response, and no change at all.
func checkRefused(t *testing.T, resp proto.Message, err error, want codes.Code, before, after *configv1.WatchConfigResponse) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want || !isNil(resp) {
		t.Errorf("refused call = %v, %v; want %v and no response", resp, err, want)
	}
	if want == codes.PermissionDenied && (st.Message() != authn.DeniedMessage || len(st.Details()) != 0) {
		t.Errorf("refusal = %v, want authn.DeniedMessage and no details", st.Proto())
	}
	if text := prototext.Format(st.Proto()); strings.Contains(text, orgB) {
		t.Errorf("refusal names org B: %s", text)
	}
	if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
		t.Errorf("a refused call changed the configuration (-before +after):\n%s", diff)
	}
}

// checkOneAudit checks that a mutating call left exactly one audit record,
// by actor, of method on target (for a refusal; an allowed create names
// what it created), ALLOWED or DENIED with code refused.
func checkOneAudit(t *testing.T, records []outboxRow, actor, method, target string, allowed bool, refused codes.Code) {
	t.Helper()
	if len(records) != 1 {
		t.Errorf("%d audit records, want exactly 1", len(records))
		return
	}
	ev := records[0].event
	want := &auditv1.AuditEvent{Actor: actor, Action: "moat.config.v1.ConfigService." + method,
		Target: target, Organization: authn.OrganizationOf(target),
		Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: strings.ToUpper(codeName(refused))}
	ignore := []protoreflect.Name{"source_address", "request_id", "event_time"}
	if allowed {
		want.Outcome, want.Status = auditv1.AuditEvent_OUTCOME_ALLOWED, "OK"
		if strings.HasPrefix(method, "Create") {
			ignore = append(ignore, "target", "organization")
		}
	}
	if diff := cmp.Diff(want, ev, protocmp.Transform(), protocmp.IgnoreFields(&auditv1.AuditEvent{}, ignore...)); diff != "" {
		t.Errorf("audit record mismatch (-want +got):\n%s", diff)
	}
}

// A refusal does not tell whether its target exists: org B's admin, org
// A's member (for admin methods) and org A's project key get the same
// answer for org A's resources and for names that exist nowhere.
func TestCrossTenantRefusalRevealsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	s := &seeder{h: h}
	s.seedTenants(t)
	c := h.client
	type probe struct {
		method string
		need   need
		call   func(ctx context.Context, name string) (proto.Message, error)
		names  [2]string // an existing resource of org A, and a missing one
	}
	probes := []probe{
		{"GetOrganization", needMember, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: n}))
		}, [2]string{orgA, "orgs/nowhere"}},
		{"GetProject", needMember, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.GetProject(ctx, &configv1.GetProjectRequest{Name: n}))
		}, [2]string{orgA + "/projects/web", orgA + "/projects/nope"}},
		{"DeleteProject", needAdmin, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: n}))
		}, [2]string{orgA + "/projects/web", orgA + "/projects/nope"}},
		{"GetProvider", needAdmin, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.GetProvider(ctx, &configv1.GetProviderRequest{Name: n}))
		}, [2]string{orgA + "/providers/openai", orgA + "/providers/nope"}},
		{"UpdateProvider", needAdmin, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: n, DisplayName: "x"}, UpdateMask: mask("display_name")}))
		}, [2]string{orgA + "/providers/openai", orgA + "/providers/nope"}},
		{"GetRoute", needMember, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.GetRoute(ctx, &configv1.GetRouteRequest{Name: n}))
		}, [2]string{orgA + "/projects/web/routes/gpt", orgA + "/projects/web/routes/nope"}},
		{"DeleteRoute", needAdmin, func(ctx context.Context, n string) (proto.Message, error) {
			return msg(c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: n}))
		}, [2]string{orgA + "/projects/web/routes/gpt", orgA + "/projects/nope/routes/nope"}},
	}
	for _, p := range probes {
		for _, who := range []string{"org B admin", "org A member", "org A project key"} {
			caller := h.tenant(t, who)
			if caller.may(p.need, orgA) {
				continue
			}
			var got [2]*status.Status
			for i, name := range p.names {
				resp, err := p.call(caller.ctx, name)
				if !isNil(resp) {
					t.Errorf("%s(%s) by %s returned %v", p.method, name, who, resp)
				}
				got[i] = status.Convert(err)
			}
			if got[0].Code() != codes.PermissionDenied {
				t.Errorf("%s(%s) by %s = %v, want PermissionDenied", p.method, p.names[0], who, got[0].Err())
			}
			if diff := cmp.Diff(got[0].Proto(), got[1].Proto(), protocmp.Transform()); diff != "" {
				t.Errorf("%s by %s answers differently for an existing and a missing resource (-existing +missing):\n%s", p.method, who, diff)
			}
		}
	}
}

// Mass assignment and cross-tenant references: org A's admin tries to
// change identifiers and output-only fields through update masks, to
// point a body's name into org B, and to reference org B's provider from
// org A's routes. Refusals change nothing and leave one DENIED audit
// record; the creates that are allowed create in org A only.
func TestCrossTenantMassAssignment(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	s := &seeder{h: h}
	s.seedTenants(t)
	c := h.client
	alice := h.tenant(t, "org A admin")
	var (
		projectA, projectB   = orgA + "/projects/web", orgB + "/projects/web"
		providerA, providerB = orgA + "/providers/openai", orgB + "/providers/openai"
		routeA, routeB       = projectA + "/routes/gpt", projectB + "/routes/gpt"
		past                 = timestamppb.New(timestamppb.Now().AsTime().AddDate(-10, 0, 0))
	)
	updateProject := func(p *configv1.Project, paths ...string) call {
		return func(ctx context.Context) (proto.Message, error) {
			return msg(c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: p, UpdateMask: mask(paths...)}))
		}
	}
	updateOrganization := func(o *configv1.Organization, paths ...string) call {
		return func(ctx context.Context) (proto.Message, error) {
			return msg(c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: o, UpdateMask: mask(paths...)}))
		}
	}
	updateProvider := func(p *configv1.Provider, paths ...string) call {
		return func(ctx context.Context) (proto.Message, error) {
			return msg(c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: p, UpdateMask: mask(paths...)}))
		}
	}
	updateRoute := func(r *configv1.Route, paths ...string) call {
		return func(ctx context.Context) (proto.Message, error) {
			return msg(c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: r, UpdateMask: mask(paths...)}))
		}
	}
	tests := []struct {
		name   string
		method string
		target string // what a refusal's audit record names
		call   call
		want   codes.Code
		// wantName, for an allowed call, is the resource it must return.
		wantName string
	}{
		{"project: mask names only the identifier, body named into org B", "UpdateProject", projectB,
			updateProject(&configv1.Project{Name: projectB}, "name"), codes.PermissionDenied, ""},
		{"project: mask names only the identifier", "UpdateProject", projectA,
			updateProject(&configv1.Project{Name: projectA, DisplayName: "x"}, "name"), codes.InvalidArgument, ""},
		{"project: create_time", "UpdateProject", projectA,
			updateProject(&configv1.Project{Name: projectA, CreateTime: past}, "create_time"), codes.InvalidArgument, ""},
		{"project: update_time", "UpdateProject", projectA,
			updateProject(&configv1.Project{Name: projectA, UpdateTime: past}, "update_time"), codes.InvalidArgument, ""},
		{"project: wildcard mask", "UpdateProject", projectA,
			updateProject(&configv1.Project{Name: projectA, DisplayName: "x", CreateTime: past}, "*"), codes.InvalidArgument, ""},
		{"project: no mask", "UpdateProject", projectA,
			updateProject(&configv1.Project{Name: projectA, DisplayName: "x"}), codes.InvalidArgument, ""},
		{"project: body named into org B", "UpdateProject", projectB,
			updateProject(&configv1.Project{Name: projectB, DisplayName: "pwned"}, "name", "display_name"), codes.PermissionDenied, ""},
		{"project: name traversal into org B", "UpdateProject", orgA + "/../umbrella/projects/web",
			updateProject(&configv1.Project{Name: orgA + "/../umbrella/projects/web", DisplayName: "pwned"}, "display_name"), codes.InvalidArgument, ""},
		{"organization: create_time", "UpdateOrganization", orgA,
			updateOrganization(&configv1.Organization{Name: orgA, CreateTime: past}, "create_time"), codes.InvalidArgument, ""},
		{"organization: body named org B", "UpdateOrganization", orgB,
			updateOrganization(&configv1.Organization{Name: orgB, DisplayName: "pwned"}, "name", "display_name"), codes.PermissionDenied, ""},
		{"provider: has_credential", "UpdateProvider", providerA,
			updateProvider(&configv1.Provider{Name: providerA, HasCredential: false}, "has_credential"), codes.InvalidArgument, ""},
		{"provider: create_time", "UpdateProvider", providerA,
			updateProvider(&configv1.Provider{Name: providerA, CreateTime: past}, "create_time"), codes.InvalidArgument, ""},
		{"provider: update_time", "UpdateProvider", providerA,
			updateProvider(&configv1.Provider{Name: providerA, UpdateTime: past}, "update_time"), codes.InvalidArgument, ""},
		{"provider: mask names only the identifier", "UpdateProvider", providerA,
			updateProvider(&configv1.Provider{Name: providerA}, "name"), codes.InvalidArgument, ""},
		{"provider: body named into org B", "UpdateProvider", providerB,
			updateProvider(&configv1.Provider{Name: providerB, BaseUrl: "https://attacker.example.com", Credential: "sk-attacker"},
				"name", "base_url", "credential"), codes.PermissionDenied, ""},
		{"provider: the identifier beside a real field is ignored", "UpdateProvider", providerA,
			updateProvider(&configv1.Provider{Name: providerA, DisplayName: "Renamed"}, "name", "display_name"), codes.OK, providerA},
		{"route: create_time", "UpdateRoute", routeA,
			updateRoute(&configv1.Route{Name: routeA, CreateTime: past}, "create_time"), codes.InvalidArgument, ""},
		{"route: update_time", "UpdateRoute", routeA,
			updateRoute(&configv1.Route{Name: routeA, UpdateTime: past}, "update_time"), codes.InvalidArgument, ""},
		{"route: mask names only the identifier", "UpdateRoute", routeA,
			updateRoute(&configv1.Route{Name: routeA}, "name"), codes.InvalidArgument, ""},
		{"route: provider of org B", "UpdateRoute", routeA,
			updateRoute(&configv1.Route{Name: routeA, Provider: providerB}, "provider"), codes.InvalidArgument, ""},
		{"route: body named into org B", "UpdateRoute", routeB,
			updateRoute(&configv1.Route{Name: routeB, Provider: providerA, UpstreamModel: "pwned"}, "name", "provider", "upstream_model"),
			codes.PermissionDenied, ""},
		{"route: create with a provider of org B", "CreateRoute", projectA,
			func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: projectA, RouteId: "borrowed", Route: &configv1.Route{
					Model: "borrowed", Provider: providerB, UpstreamModel: "u"}}))
			}, codes.InvalidArgument, ""},
		{"project: create with a body named into org B", "CreateProject", orgA,
			func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: orgA, ProjectId: "planted",
					Project: &configv1.Project{Name: orgB + "/projects/planted", CreateTime: past}}))
			}, codes.OK, orgA + "/projects/planted"},
		{"provider: create with a body named into org B", "CreateProvider", orgA,
			func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: orgA, ProviderId: "planted", Provider: &configv1.Provider{
					Name: orgB + "/providers/planted", Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com"}}))
			}, codes.OK, orgA + "/providers/planted"},
		{"route: create with a body named into org B", "CreateRoute", projectA,
			func(ctx context.Context) (proto.Message, error) {
				return msg(c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: projectA, RouteId: "planted", Route: &configv1.Route{
					Name: routeB, Model: "planted", Provider: providerA, UpstreamModel: "u"}}))
			}, codes.OK, projectA + "/routes/planted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, audits := h.snapshot(t), len(h.audits(t))
			resp, err := tt.call(alice.ctx)
			after, records := h.snapshot(t), h.audits(t)[audits:]
			if tt.want != codes.OK {
				checkRefused(t, resp, err, tt.want, before, after)
				checkOneAudit(t, records, alice.subject, tt.method, tt.target, false, tt.want)
				return
			}
			checkAllowed(t, orgA, resp, err, before, after)
			checkOneAudit(t, records, alice.subject, tt.method, tt.target, true, codes.OK)
			if name := nameOf(resp); name != tt.wantName {
				t.Errorf("allowed call returned %s, want %s", name, tt.wantName)
			}
		})
	}
}

// nameOf returns the name of the resource a create or update response
// carries.
func nameOf(m proto.Message) string {
	switch r := m.(type) {
	case *configv1.CreateProjectResponse:
		return r.GetProject().GetName()
	case *configv1.CreateProviderResponse:
		return r.GetProvider().GetName()
	case *configv1.UpdateProviderResponse:
		return r.GetProvider().GetName()
	case *configv1.CreateRouteResponse:
		return r.GetRoute().GetName()
	}
	return fmt.Sprintf("a %T", m)
}

// A create's request_id is an idempotency key of one request (AIP-155),
// not a handle on another tenant's resource: org A's admin, replaying a
// request id that created something in org B, gets neither that resource
// nor its name, and org B stays as it was.
func TestCrossTenantRequestIDReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	s := &seeder{h: h}
	s.seedTenants(t)
	c := h.client
	alice := h.tenant(t, "org A admin")
	tests := []struct {
		name    string
		createB func(ctx context.Context, rid string) error                  // as org B's admin
		replayA func(ctx context.Context, rid string) (proto.Message, error) // as org A's admin
	}{
		{"project",
			func(ctx context.Context, rid string) error {
				_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: orgB, ProjectId: "secret-project", RequestId: rid})
				return err
			},
			func(ctx context.Context, rid string) (proto.Message, error) {
				return msg(c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: orgA, ProjectId: "replay", RequestId: rid}))
			}},
		{"deleted project",
			func(ctx context.Context, rid string) error {
				p, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: orgB, ProjectId: "gone-project", RequestId: rid})
				if err == nil {
					_, err = c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: p.GetProject().GetName()})
				}
				return err
			},
			func(ctx context.Context, rid string) (proto.Message, error) {
				return msg(c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: orgA, ProjectId: "replay-gone", RequestId: rid}))
			}},
		{"provider",
			func(ctx context.Context, rid string) error {
				_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: orgB, ProviderId: "secret-provider", RequestId: rid,
					Provider: &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://internal.umbrella.example", Credential: "sk-umbrella"}})
				return err
			},
			func(ctx context.Context, rid string) (proto.Message, error) {
				return msg(c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: orgA, ProviderId: "replay", RequestId: rid,
					Provider: &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com"}}))
			}},
		{"route",
			func(ctx context.Context, rid string) error {
				_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: orgB + "/projects/web", RouteId: "secret-route", RequestId: rid,
					Route: &configv1.Route{Model: "secret", Provider: orgB + "/providers/openai", UpstreamModel: "secret-upstream"}})
				return err
			},
			func(ctx context.Context, rid string) (proto.Message, error) {
				return msg(c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: orgA + "/projects/web", RouteId: "replay", RequestId: rid,
					Route: &configv1.Route{Model: "replay", Provider: orgA + "/providers/openai", UpstreamModel: "u"}}))
			}},
	}
	bob := h.tenant(t, "org B admin")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rid := uuid.NewString()
			if err := tt.createB(bob.ctx, rid); err != nil {
				t.Fatalf("org B's create: %v", err)
			}
			before, audits := h.snapshot(t), len(h.audits(t))
			resp, err := tt.replayA(alice.ctx, rid)
			after, records := h.snapshot(t), h.audits(t)[audits:]
			if err == nil {
				checkAllowed(t, orgA, resp, err, before, after)
			} else {
				if text := status.Convert(err).String(); strings.Contains(text, orgB) {
					t.Errorf("refused replay reveals org B: %s", text)
				}
				if diff := cmp.Diff(of(before, orgB), of(after, orgB), protocmp.Transform()); diff != "" {
					t.Errorf("refused replay changed org B (-before +after):\n%s", diff)
				}
			}
			for _, r := range records {
				if r.event.GetOrganization() != orgA {
					t.Errorf("org A's call was audited in %q as %s on %s", r.event.GetOrganization(), r.event.GetOutcome(), r.event.GetTarget())
				}
			}
		})
	}
}
