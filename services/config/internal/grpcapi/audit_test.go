package grpcapi_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

// auditStep is one mutating call and the audit record it must leave.
type auditStep struct {
	name   string
	ctx    context.Context
	call   func(context.Context) error
	code   codes.Code
	method string // short RPC name
	target string
	actor  string
	rid    string // the request id; "" means the trace id
}

var traceID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func orgOf(target string) string {
	parts := strings.Split(target, "/")
	if len(parts) < 2 || parts[0] != "orgs" {
		return ""
	}
	return "orgs/" + parts[1]
}

// RELIABILITY 19: every mutating RPC, allowed or refused (by the
// authentication interceptor, by authorization, by validation, for a
// missing target, for a precondition), leaves exactly one audit event in
// the outbox with actor, action, target, outcome, status, source, request
// id and time; reads leave none.
func TestAuditCompleteness(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c := h.client
	const (
		ridOrg      = "0190b0a4-7c2e-7000-8000-0000000000a1"
		ridProject  = "0190b0a4-7c2e-7000-8000-0000000000a2"
		ridProvider = "0190b0a4-7c2e-7000-8000-0000000000a3"
		ridRoute    = "0190b0a4-7c2e-7000-8000-0000000000a4"
	)

	// calls returns the three attempts every mutating method gets: by a
	// project key, without a key, and by the platform admin.
	calls := func(method, refusedTarget, target, rid string, call func(context.Context) error) []auditStep {
		return []auditStep{
			{method + " by a project key", h.project, call, codes.PermissionDenied, method, refusedTarget, projectSubject, rid},
			{method + " without a key", h.anon, call, codes.Unauthenticated, method, refusedTarget, "anonymous", rid},
			{method + " by the admin", h.admin, call, codes.OK, method, target, adminSubject, rid},
		}
	}
	one := func(name string, code codes.Code, method, target, rid string, call func(context.Context) error) auditStep {
		return auditStep{name, h.admin, call, code, method, target, adminSubject, rid}
	}
	route := &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "gpt", RequestId: ridRoute, Route: &configv1.Route{
		Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "gpt-4o"}}

	var steps []auditStep
	steps = append(steps, calls("CreateOrganization", "", "orgs/acme", ridOrg, func(ctx context.Context) error {
		_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme", RequestId: ridOrg})
		return err
	})...)
	steps = append(steps, one("CreateOrganization with a bad id", codes.InvalidArgument, "CreateOrganization", "", "", func(ctx context.Context) error {
		_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "AB"})
		return err
	}))
	steps = append(steps, calls("UpdateOrganization", "orgs/acme", "orgs/acme", "", func(ctx context.Context) error {
		_, err := c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: &configv1.Organization{Name: "orgs/acme", DisplayName: "A"}, UpdateMask: mask("display_name")})
		return err
	})...)
	steps = append(steps, one("UpdateOrganization of a missing org", codes.NotFound, "UpdateOrganization", "orgs/nope", "", func(ctx context.Context) error {
		_, err := c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: &configv1.Organization{Name: "orgs/nope"}, UpdateMask: mask("display_name")})
		return err
	}))
	steps = append(steps, calls("CreateProject", "orgs/acme", "orgs/acme/projects/web", ridProject, func(ctx context.Context) error {
		_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "web", RequestId: ridProject})
		return err
	})...)
	steps = append(steps, calls("UpdateProject", "orgs/acme/projects/web", "orgs/acme/projects/web", "", func(ctx context.Context) error {
		_, err := c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: &configv1.Project{Name: "orgs/acme/projects/web", DisplayName: "W"}, UpdateMask: mask("display_name")})
		return err
	})...)
	steps = append(steps, calls("CreateProvider", "orgs/acme", "orgs/acme/providers/openai", ridProvider, func(ctx context.Context) error {
		_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "openai", RequestId: ridProvider, Provider: &configv1.Provider{
			Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com", Credential: "sk-audit"}})
		return err
	})...)
	steps = append(steps, calls("UpdateProvider", "orgs/acme/providers/openai", "orgs/acme/providers/openai", "", func(ctx context.Context) error {
		_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Credential: "sk-audit-2"}, UpdateMask: mask("credential")})
		return err
	})...)
	steps = append(steps, calls("CreateRoute", "orgs/acme/projects/web", "orgs/acme/projects/web/routes/gpt", ridRoute, func(ctx context.Context) error {
		_, err := c.CreateRoute(ctx, route)
		return err
	})...)
	steps = append(steps,
		one("CreateRoute retried with its request id", codes.OK, "CreateRoute", "orgs/acme/projects/web/routes/gpt", ridRoute, func(ctx context.Context) error {
			_, err := c.CreateRoute(ctx, route)
			return err
		}),
		one("CreateRoute to a missing provider", codes.InvalidArgument, "CreateRoute", "orgs/acme/projects/web", "", func(ctx context.Context) error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "other", Route: &configv1.Route{
				Model: "other", Provider: "orgs/acme/providers/nope", UpstreamModel: "u"}})
			return err
		}))
	steps = append(steps, calls("UpdateRoute", "orgs/acme/projects/web/routes/gpt", "orgs/acme/projects/web/routes/gpt", "", func(ctx context.Context) error {
		_, err := c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt", UpstreamModel: "gpt-4.1"}, UpdateMask: mask("upstream_model")})
		return err
	})...)
	deleteProvider := func(ctx context.Context) error {
		_, err := c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/openai"})
		return err
	}
	steps = append(steps, one("DeleteProvider in use", codes.FailedPrecondition, "DeleteProvider", "orgs/acme/providers/openai", "", deleteProvider))
	steps = append(steps, calls("DeleteRoute", "orgs/acme/projects/web/routes/gpt", "orgs/acme/projects/web/routes/gpt", "", func(ctx context.Context) error {
		_, err := c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: "orgs/acme/projects/web/routes/gpt"})
		return err
	})...)
	steps = append(steps, calls("DeleteProvider", "orgs/acme/providers/openai", "orgs/acme/providers/openai", "", deleteProvider)...)
	steps = append(steps, calls("DeleteProject", "orgs/acme/projects/web", "orgs/acme/projects/web", "", func(ctx context.Context) error {
		_, err := c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: "orgs/acme/projects/web"})
		return err
	})...)
	steps = append(steps, calls("DeleteOrganization", "orgs/acme", "orgs/acme", "", func(ctx context.Context) error {
		_, err := c.DeleteOrganization(ctx, &configv1.DeleteOrganizationRequest{Name: "orgs/acme"})
		return err
	})...)

	covered := map[string]bool{}
	for _, st := range steps {
		before := len(h.audits(t))
		start := time.Now()
		err := st.call(st.ctx)
		end := time.Now()
		if status.Code(err) != st.code {
			t.Fatalf("%s: got %v, want %v", st.name, err, st.code)
		}
		rows := h.audits(t)
		if len(rows) != before+1 {
			t.Errorf("%s: %d audit events, want exactly 1", st.name, len(rows)-before)
			continue
		}
		covered[st.method] = true
		checkAudit(t, st, rows[len(rows)-1], start, end)
	}
	for name := range rpcs(c) {
		if grpcapi.Mutating("/moat.config.v1.ConfigService/"+name) && !covered[name] {
			t.Errorf("mutating method %s not covered", name)
		}
	}

	// Reads and refused reads are not audited.
	before := len(h.audits(t))
	_, _ = c.ListOrganizations(h.admin, &configv1.ListOrganizationsRequest{})
	_, _ = c.GetProject(h.project, &configv1.GetProjectRequest{Name: "orgs/acme/projects/web"})
	_, _ = c.GetRoute(h.anon, &configv1.GetRouteRequest{Name: "orgs/acme/projects/web/routes/gpt"})
	if stream, err := c.WatchConfig(h.anon, &configv1.WatchConfigRequest{}); err == nil {
		_, _ = stream.Recv()
	}
	if n := len(h.audits(t)) - before; n != 0 {
		t.Errorf("reads wrote %d audit events, want 0", n)
	}
}

func checkAudit(t *testing.T, st auditStep, row outboxRow, start, end time.Time) {
	t.Helper()
	ev := row.event
	wantOutcome := auditv1.AuditEvent_OUTCOME_DENIED
	if st.code == codes.OK {
		wantOutcome = auditv1.AuditEvent_OUTCOME_ALLOWED
	}
	wantOrg := orgOf(st.target)
	checks := []struct {
		field     string
		got, want any
	}{
		{"subject", row.subject, "config.v1.audit_event.recorded"},
		{"action", ev.GetAction(), "moat.config.v1.ConfigService." + st.method},
		{"actor", ev.GetActor(), st.actor},
		{"target", ev.GetTarget(), st.target},
		{"organization", ev.GetOrganization(), wantOrg},
		{"outcome", ev.GetOutcome(), wantOutcome},
		{"status", ev.GetStatus(), strings.ToUpper(codeName(st.code))},
		{"ce-source", first(row.headers["ce-source"]), "moat/config"},
		{"ce-subject", first(row.headers["ce-subject"]), st.target},
		{"ce-type", first(row.headers["ce-type"]), "moat.audit.v1.AuditEvent"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: audit %s = %v, want %v", st.name, c.field, c.got, c.want)
		}
	}
	if !strings.HasPrefix(ev.GetSourceAddress(), "127.0.0.1:") {
		t.Errorf("%s: audit source address = %q, want the loopback peer", st.name, ev.GetSourceAddress())
	}
	if st.rid != "" && ev.GetRequestId() != st.rid {
		t.Errorf("%s: audit request id = %q, want %q", st.name, ev.GetRequestId(), st.rid)
	}
	if st.rid == "" && !traceID.MatchString(ev.GetRequestId()) {
		t.Errorf("%s: audit request id = %q, want the trace id", st.name, ev.GetRequestId())
	}
	if at := ev.GetEventTime().AsTime(); at.Before(start.Add(-time.Millisecond)) || at.After(end.Add(time.Millisecond)) {
		t.Errorf("%s: audit event time %v outside the call [%v, %v]", st.name, at, start, end)
	}
	if ev.GetName() != "" || ev.GetProducer() != "" || ev.GetRecordTime() != nil {
		t.Errorf("%s: producer set the audit service's fields: %v", st.name, ev)
	}
}

// codeName is the canonical name of c: OK, PERMISSION_DENIED, ...
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' && c != codes.OK {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
