package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

var ignoreTimes = protocmp.IgnoreFields(&configv1.Organization{}, "create_time", "update_time")

func ignoreAllTimes() cmp.Option {
	return cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&configv1.Organization{}, "create_time", "update_time"),
		protocmp.IgnoreFields(&configv1.Project{}, "create_time", "update_time"),
		protocmp.IgnoreFields(&configv1.Provider{}, "create_time", "update_time"),
		protocmp.IgnoreFields(&configv1.Route{}, "create_time", "update_time"),
	}
}

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// seed creates orgs/acme with project web, provider openai (credential
// cred) and route gpt, as the platform admin.
func (h *harness) seed(t *testing.T, cred string) {
	t.Helper()
	c := h.client
	steps := []func() error{
		func() error {
			_, err := c.CreateOrganization(h.admin, &configv1.CreateOrganizationRequest{OrganizationId: "acme", Organization: &configv1.Organization{DisplayName: "Acme"}})
			return err
		},
		func() error {
			_, err := c.CreateProject(h.admin, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "web", Project: &configv1.Project{DisplayName: "Web"}})
			return err
		},
		func() error {
			_, err := c.CreateProvider(h.admin, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "openai", Provider: &configv1.Provider{
				Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com/v1", Credential: cred}})
			return err
		},
		func() error {
			_, err := c.CreateRoute(h.admin, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "gpt", Route: &configv1.Route{
				Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "gpt-4o"}})
			return err
		},
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("seed step %d: %v", i, err)
		}
	}
}

func TestCRUD(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c, ctx := h.client, h.admin
	h.seed(t, "sk-seed-credential")

	gotOrg, err := c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: "orgs/acme"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&configv1.Organization{Name: "orgs/acme", DisplayName: "Acme"}, gotOrg.GetOrganization(), protocmp.Transform(), ignoreTimes); diff != "" {
		t.Errorf("GetOrganization mismatch (-want +got):\n%s", diff)
	}
	if gotOrg.GetOrganization().GetCreateTime() == nil || gotOrg.GetOrganization().GetUpdateTime() == nil {
		t.Error("GetOrganization has no create or update time")
	}

	updOrg, err := c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{
		Organization: &configv1.Organization{Name: "orgs/acme", DisplayName: "Acme Corp"}, UpdateMask: mask("display_name")})
	if err != nil || updOrg.GetOrganization().GetDisplayName() != "Acme Corp" {
		t.Errorf("UpdateOrganization = %v, %v; want display name Acme Corp", updOrg, err)
	}

	updProject, err := c.UpdateProject(ctx, &configv1.UpdateProjectRequest{
		Project: &configv1.Project{Name: "orgs/acme/projects/web", DisplayName: "Website"}, UpdateMask: mask("display_name")})
	if err != nil || updProject.GetProject().GetDisplayName() != "Website" {
		t.Errorf("UpdateProject = %v, %v", updProject, err)
	}
	projects, err := c.ListProjects(ctx, &configv1.ListProjectsRequest{Parent: "orgs/acme"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&configv1.ListProjectsResponse{Projects: []*configv1.Project{{Name: "orgs/acme/projects/web", DisplayName: "Website"}}},
		projects, ignoreAllTimes()); diff != "" {
		t.Errorf("ListProjects mismatch (-want +got):\n%s", diff)
	}

	wantProvider := &configv1.Provider{Name: "orgs/acme/providers/openai", Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE,
		BaseUrl: "https://api.example.com/v1", HasCredential: true}
	gotProvider, err := c.GetProvider(ctx, &configv1.GetProviderRequest{Name: "orgs/acme/providers/openai"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantProvider, gotProvider.GetProvider(), ignoreAllTimes()); diff != "" {
		t.Errorf("GetProvider mismatch (-want +got):\n%s", diff)
	}
	// Removing the credential, and a base URL with a trailing slash.
	updProvider, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{
		Provider:   &configv1.Provider{Name: "orgs/acme/providers/openai", BaseUrl: "http://127.0.0.1:8000/v1/", DisplayName: "Local"},
		UpdateMask: mask("credential", "base_url", "display_name")})
	if err != nil {
		t.Fatal(err)
	}
	wantProvider.HasCredential, wantProvider.BaseUrl, wantProvider.DisplayName = false, "http://127.0.0.1:8000/v1", "Local"
	if diff := cmp.Diff(wantProvider, updProvider.GetProvider(), ignoreAllTimes()); diff != "" {
		t.Errorf("UpdateProvider mismatch (-want +got):\n%s", diff)
	}
	providers, err := c.ListProviders(ctx, &configv1.ListProvidersRequest{Parent: "orgs/acme"})
	if err != nil || len(providers.GetProviders()) != 1 {
		t.Errorf("ListProviders = %v, %v; want one", providers, err)
	}

	// A second provider, then the route moves to it.
	if _, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "backup", Provider: &configv1.Provider{
		Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://backup.example.com"}}); err != nil {
		t.Fatal(err)
	}
	updRoute, err := c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{
		Route:      &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt", Provider: "orgs/acme/providers/backup", UpstreamModel: "gpt-4.1", Model: "ignored"},
		UpdateMask: mask("provider", "upstream_model")})
	if err != nil {
		t.Fatal(err)
	}
	wantRoute := &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt", Model: "gpt", Provider: "orgs/acme/providers/backup", UpstreamModel: "gpt-4.1"}
	if diff := cmp.Diff(wantRoute, updRoute.GetRoute(), ignoreAllTimes()); diff != "" {
		t.Errorf("UpdateRoute mismatch (-want +got):\n%s", diff)
	}
	gotRoute, err := c.GetRoute(ctx, &configv1.GetRouteRequest{Name: wantRoute.Name})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantRoute, gotRoute.GetRoute(), ignoreAllTimes()); diff != "" {
		t.Errorf("GetRoute mismatch (-want +got):\n%s", diff)
	}
	routes, err := c.ListRoutes(ctx, &configv1.ListRoutesRequest{Parent: "orgs/acme/projects/web"})
	if err != nil || len(routes.GetRoutes()) != 1 {
		t.Errorf("ListRoutes = %v, %v; want one", routes, err)
	}

	// Delete everything, children first.
	deletes := []struct {
		name string
		del  func() error
		get  func() error
	}{
		{"route", func() error {
			_, err := c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: wantRoute.Name})
			return err
		},
			func() error { _, err := c.GetRoute(ctx, &configv1.GetRouteRequest{Name: wantRoute.Name}); return err }},
		{"provider", func() error {
			_, err := c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/openai"})
			if err == nil {
				_, err = c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/backup"})
			}
			return err
		}, func() error {
			_, err := c.GetProvider(ctx, &configv1.GetProviderRequest{Name: "orgs/acme/providers/backup"})
			return err
		}},
		{"project", func() error {
			_, err := c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		}, func() error {
			_, err := c.GetProject(ctx, &configv1.GetProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		}},
		{"organization", func() error {
			_, err := c.DeleteOrganization(ctx, &configv1.DeleteOrganizationRequest{Name: "orgs/acme"})
			return err
		},
			func() error {
				_, err := c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: "orgs/acme"})
				return err
			}},
	}
	for _, d := range deletes {
		if err := d.del(); err != nil {
			t.Fatalf("delete %s: %v", d.name, err)
		}
		if err := d.get(); status.Code(err) != codes.NotFound {
			t.Errorf("get deleted %s = %v, want NotFound", d.name, err)
		}
	}
	orgs, err := c.ListOrganizations(ctx, &configv1.ListOrganizationsRequest{})
	if err != nil || len(orgs.GetOrganizations()) != 0 {
		t.Errorf("ListOrganizations after deleting all = %v, %v; want none", orgs, err)
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme"}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range []string{"zulu", "alpha", "mike", "bravo", "echo"} {
		if _, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: id}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "orgs/acme/projects/"+id)
	}
	var got []string
	req := &configv1.ListProjectsRequest{Parent: "orgs/acme", PageSize: 2}
	for pages := 1; ; pages++ {
		resp, err := c.ListProjects(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.GetProjects() {
			got = append(got, p.GetName())
		}
		if resp.GetNextPageToken() == "" {
			if pages != 3 {
				t.Errorf("pages = %d, want 3", pages)
			}
			break
		}
		if pages > 3 {
			t.Fatal("pagination does not end")
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("projects in creation order mismatch (-want +got):\n%s", diff)
	}
	// A token of one list is refused by another.
	first, err := c.ListProjects(ctx, &configv1.ListProjectsRequest{Parent: "orgs/acme", PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListProviders(ctx, &configv1.ListProvidersRequest{Parent: "orgs/acme", PageToken: first.GetNextPageToken()})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListProviders with a ListProjects token = %v, want InvalidArgument", err)
	}
}

// fieldOf returns the field of the BadRequest detail of an
// INVALID_ARGUMENT status.
func fieldOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) == 1 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	h.seed(t, "")
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "beta"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/beta", ProviderId: "other", Provider: &configv1.Provider{
		Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://x.example.com"}}); err != nil {
		t.Fatal(err)
	}
	okProvider := func() *configv1.Provider {
		return &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com"}
	}
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"org id too short", func() error {
			_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "ab"})
			return err
		}, "organization_id"},
		{"org id upper case", func() error {
			_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "Acme2"})
			return err
		}, "organization_id"},
		{"request id not a UUID", func() error {
			_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "gamma", RequestId: "retry-1"})
			return err
		}, "request_id"},
		{"bad parent", func() error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "acme", ProjectId: "api"})
			return err
		}, "parent"},
		{"control character in display name", func() error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "api", Project: &configv1.Project{DisplayName: "a\x00b"}})
			return err
		}, "project.display_name"},
		{"provider type unset", func() error {
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "p2", Provider: &configv1.Provider{BaseUrl: "https://x.example.com"}})
			return err
		}, "provider_id"},
		{"provider type unset, valid id", func() error {
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "prov2", Provider: &configv1.Provider{BaseUrl: "https://x.example.com"}})
			return err
		}, "provider.type"},
		{"provider URL not http", func() error {
			p := okProvider()
			p.BaseUrl = "ftp://files.example.com"
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "prov2", Provider: p})
			return err
		}, "provider.base_url"},
		{"provider URL with userinfo", func() error {
			p := okProvider()
			p.BaseUrl = "https://user:pw@api.example.com"
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "prov2", Provider: p})
			return err
		}, "provider.base_url"},
		{"credential with a newline", func() error {
			p := okProvider()
			p.Credential = "sk-abc\nX-Evil: 1"
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "prov2", Provider: p})
			return err
		}, "provider.credential"},
		{"route model empty", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "rt2", Route: &configv1.Route{
				Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}})
			return err
		}, "route.model"},
		{"route model not ASCII", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "rt2", Route: &configv1.Route{
				Model: "modèle", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}})
			return err
		}, "route.model"},
		{"route upstream model missing", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "rt2", Route: &configv1.Route{
				Model: "m2", Provider: "orgs/acme/providers/openai"}})
			return err
		}, "route.upstream_model"},
		{"route provider of another org", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "rt2", Route: &configv1.Route{
				Model: "m2", Provider: "orgs/beta/providers/other", UpstreamModel: "u"}})
			return err
		}, "route.provider"},
		{"route provider missing", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "rt2", Route: &configv1.Route{
				Model: "m2", Provider: "orgs/acme/providers/nope", UpstreamModel: "u"}})
			return err
		}, "route.provider"},
		{"update without mask", func() error {
			_, err := c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: &configv1.Organization{Name: "orgs/acme"}})
			return err
		}, "update_mask"},
		{"update of an output-only field", func() error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/openai"}, UpdateMask: mask("has_credential")})
			return err
		}, "update_mask"},
		{"update of an unknown field", func() error {
			_, err := c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt"}, UpdateMask: mask("priority")})
			return err
		}, "update_mask"},
		{"update to an invalid value", func() error {
			_, err := c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt"}, UpdateMask: mask("model")})
			return err
		}, "route.model"},
		{"update with a malformed name", func() error {
			_, err := c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: &configv1.Project{Name: "projects/web"}, UpdateMask: mask("display_name")})
			return err
		}, "project.name"},
		{"negative page size", func() error {
			_, err := c.ListOrganizations(ctx, &configv1.ListOrganizationsRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"forged page token", func() error {
			_, err := c.ListRoutes(ctx, &configv1.ListRoutesRequest{Parent: "orgs/acme/projects/web", PageToken: "bm90IGEgdG9rZW4"})
			return err
		}, "page_token"},
		{"malformed name", func() error {
			_, err := c.GetRoute(ctx, &configv1.GetRouteRequest{Name: "orgs/acme/routes/gpt"})
			return err
		}, "name"},
	}
	for _, tt := range tests {
		err := tt.call()
		if status.Code(err) != codes.InvalidArgument || fieldOf(err) != tt.field {
			t.Errorf("%s: got %v (field %q), want InvalidArgument on %s", tt.name, err, fieldOf(err), tt.field)
		}
	}
}

func TestNotFoundAndPreconditions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	h.seed(t, "")
	c, ctx := h.client, h.admin
	tests := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"get missing org", func() error {
			_, err := c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: "orgs/nope"})
			return err
		}, codes.NotFound},
		{"update missing project", func() error {
			_, err := c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: &configv1.Project{Name: "orgs/acme/projects/nope"}, UpdateMask: mask("display_name")})
			return err
		}, codes.NotFound},
		{"delete missing provider", func() error {
			_, err := c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/nope"})
			return err
		}, codes.NotFound},
		{"delete missing route", func() error {
			_, err := c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: "orgs/acme/projects/web/routes/nope"})
			return err
		}, codes.NotFound},
		{"project in a missing org", func() error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/nope", ProjectId: "web"})
			return err
		}, codes.NotFound},
		{"list routes of a missing project", func() error {
			_, err := c.ListRoutes(ctx, &configv1.ListRoutesRequest{Parent: "orgs/acme/projects/nope"})
			return err
		}, codes.NotFound},
		{"duplicate project", func() error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "web"})
			return err
		}, codes.AlreadyExists},
		{"duplicate route model", func() error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "gpt2", Route: &configv1.Route{
				Model: "gpt", Provider: "orgs/acme/providers/openai", UpstreamModel: "u"}})
			return err
		}, codes.AlreadyExists},
		{"delete org with project and provider", func() error {
			_, err := c.DeleteOrganization(ctx, &configv1.DeleteOrganizationRequest{Name: "orgs/acme"})
			return err
		}, codes.FailedPrecondition},
		{"delete project with routes", func() error {
			_, err := c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		}, codes.FailedPrecondition},
		{"delete provider used by a route", func() error {
			_, err := c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/openai"})
			return err
		}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		if err := tt.call(); status.Code(err) != tt.code {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.code)
		}
	}
}

func TestCreateRetryWithRequestID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c, ctx := h.client, h.admin
	if _, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "acme"}); err != nil {
		t.Fatal(err)
	}
	req := &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "openai", RequestId: "7d444840-9dc0-11d1-b245-5ffdce74fad2",
		Provider: &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com", Credential: "sk-retry"}}
	first, err := c.CreateProvider(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateProvider(ctx, req)
	if err != nil {
		t.Fatalf("retry with the same request_id = %v, want the first result", err)
	}
	if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
		t.Errorf("retry mismatch (-first +retry):\n%s", diff)
	}
	// Without the request id, the same create is a conflict.
	req.RequestId = ""
	if _, err := c.CreateProvider(ctx, req); status.Code(err) != codes.AlreadyExists {
		t.Errorf("create without request id = %v, want AlreadyExists", err)
	}
	list, err := c.ListProviders(ctx, &configv1.ListProvidersRequest{Parent: "orgs/acme"})
	if err != nil || len(list.GetProviders()) != 1 {
		t.Errorf("ListProviders = %v, %v; want exactly one provider", list, err)
	}
}

// Organization and project ids are never used again, not even after a
// deletion: identity, billing and audit key their state by these names.
// Creating one again is ALREADY_EXISTS, saying why, and is audited as
// DENIED like any refusal; the retry of the original create still finds
// the deleted resource gone.
func TestDeletedIDsAreNeverReused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c := h.client
	const (
		ridWeb   = "0190b0a4-7c2e-7000-8000-0000000000b1"
		ridFresh = "0190b0a4-7c2e-7000-8000-0000000000b2"
	)
	setup := []func() error{
		func() error {
			_, err := c.CreateOrganization(h.admin, &configv1.CreateOrganizationRequest{OrganizationId: "acme"})
			return err
		},
		func() error {
			_, err := c.CreateProject(h.admin, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "web", RequestId: ridWeb})
			return err
		},
		func() error {
			_, err := c.DeleteProject(h.admin, &configv1.DeleteProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		},
		func() error {
			_, err := c.CreateOrganization(h.admin, &configv1.CreateOrganizationRequest{OrganizationId: "beta"})
			return err
		},
		func() error {
			_, err := c.DeleteOrganization(h.admin, &configv1.DeleteOrganizationRequest{Name: "orgs/beta"})
			return err
		},
	}
	for i, step := range setup {
		if err := step(); err != nil {
			t.Fatalf("setup step %d: %v", i, err)
		}
	}

	const (
		projectRetired = "project orgs/acme/projects/web: already exists: the id belonged to a deleted project, and project ids are never reused; choose another id"
		orgRetired     = "organization orgs/beta: already exists: the id belonged to a deleted organization, and organization ids are never reused; choose another id"
	)
	createWeb := func(rid string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "web", RequestId: rid})
			return err
		}
	}
	tests := []struct {
		step auditStep
		msg  string // the status message; "" to leave it unchecked
	}{
		{auditStep{"CreateProject with a deleted id", h.admin, createWeb(""), codes.AlreadyExists,
			"CreateProject", "orgs/acme", adminSubject, ""}, projectRetired},
		{auditStep{"CreateProject with a deleted id and a fresh request id", h.admin, createWeb(ridFresh), codes.AlreadyExists,
			"CreateProject", "orgs/acme", adminSubject, ridFresh}, projectRetired},
		{auditStep{"retry of the deleted project's create", h.admin, createWeb(ridWeb), codes.NotFound,
			"CreateProject", "orgs/acme", adminSubject, ridWeb}, "project orgs/acme/projects/web: not found"},
		{auditStep{"CreateOrganization with a deleted id", h.admin, func(ctx context.Context) error {
			_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "beta"})
			return err
		}, codes.AlreadyExists, "CreateOrganization", "", adminSubject, ""}, orgRetired},
	}
	for _, tt := range tests {
		st := tt.step
		before := len(h.audits(t))
		start := time.Now()
		err := st.call(st.ctx)
		end := time.Now()
		if s, _ := status.FromError(err); s.Code() != st.code || (tt.msg != "" && s.Message() != tt.msg) {
			t.Errorf("%s: got %v, want %v %q", st.name, err, st.code, tt.msg)
		}
		rows := h.audits(t)
		if len(rows) != before+1 {
			t.Errorf("%s: %d audit events, want exactly 1", st.name, len(rows)-before)
			continue
		}
		checkAudit(t, st, rows[len(rows)-1], start, end)
	}

	// Nothing was created under the retired ids.
	if list, err := c.ListProjects(h.admin, &configv1.ListProjectsRequest{Parent: "orgs/acme"}); err != nil || len(list.GetProjects()) != 0 {
		t.Errorf("ListProjects = %v, %v; want no projects", list, err)
	}
	if _, err := c.GetOrganization(h.admin, &configv1.GetOrganizationRequest{Name: "orgs/beta"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOrganization(orgs/beta) = %v, want NotFound", err)
	}
}

// rpcs calls every administrative method once with a plausible request.
func rpcs(c configv1.ConfigServiceClient) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"CreateOrganization": func(ctx context.Context) error {
			_, err := c.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "evil"})
			return err
		},
		"GetOrganization": func(ctx context.Context) error {
			_, err := c.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: "orgs/acme"})
			return err
		},
		"ListOrganizations": func(ctx context.Context) error {
			_, err := c.ListOrganizations(ctx, &configv1.ListOrganizationsRequest{})
			return err
		},
		"UpdateOrganization": func(ctx context.Context) error {
			_, err := c.UpdateOrganization(ctx, &configv1.UpdateOrganizationRequest{Organization: &configv1.Organization{Name: "orgs/acme", DisplayName: "pwned"}, UpdateMask: mask("display_name")})
			return err
		},
		"DeleteOrganization": func(ctx context.Context) error {
			_, err := c.DeleteOrganization(ctx, &configv1.DeleteOrganizationRequest{Name: "orgs/acme"})
			return err
		},
		"CreateProject": func(ctx context.Context) error {
			_, err := c.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: "orgs/acme", ProjectId: "evil"})
			return err
		},
		"GetProject": func(ctx context.Context) error {
			_, err := c.GetProject(ctx, &configv1.GetProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		},
		"ListProjects": func(ctx context.Context) error {
			_, err := c.ListProjects(ctx, &configv1.ListProjectsRequest{Parent: "orgs/acme"})
			return err
		},
		"UpdateProject": func(ctx context.Context) error {
			_, err := c.UpdateProject(ctx, &configv1.UpdateProjectRequest{Project: &configv1.Project{Name: "orgs/acme/projects/web", DisplayName: "pwned"}, UpdateMask: mask("display_name")})
			return err
		},
		"DeleteProject": func(ctx context.Context) error {
			_, err := c.DeleteProject(ctx, &configv1.DeleteProjectRequest{Name: "orgs/acme/projects/web"})
			return err
		},
		"CreateProvider": func(ctx context.Context) error {
			_, err := c.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "evil", Provider: &configv1.Provider{
				Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://evil.example.com"}})
			return err
		},
		"GetProvider": func(ctx context.Context) error {
			_, err := c.GetProvider(ctx, &configv1.GetProviderRequest{Name: "orgs/acme/providers/openai"})
			return err
		},
		"ListProviders": func(ctx context.Context) error {
			_, err := c.ListProviders(ctx, &configv1.ListProvidersRequest{Parent: "orgs/acme"})
			return err
		},
		"UpdateProvider": func(ctx context.Context) error {
			_, err := c.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", BaseUrl: "https://evil.example.com"}, UpdateMask: mask("base_url")})
			return err
		},
		"DeleteProvider": func(ctx context.Context) error {
			_, err := c.DeleteProvider(ctx, &configv1.DeleteProviderRequest{Name: "orgs/acme/providers/openai"})
			return err
		},
		"CreateRoute": func(ctx context.Context) error {
			_, err := c.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: "orgs/acme/projects/web", RouteId: "evil", Route: &configv1.Route{
				Model: "evil", Provider: "orgs/acme/providers/openai", UpstreamModel: "evil"}})
			return err
		},
		"GetRoute": func(ctx context.Context) error {
			_, err := c.GetRoute(ctx, &configv1.GetRouteRequest{Name: "orgs/acme/projects/web/routes/gpt"})
			return err
		},
		"ListRoutes": func(ctx context.Context) error {
			_, err := c.ListRoutes(ctx, &configv1.ListRoutesRequest{Parent: "orgs/acme/projects/web"})
			return err
		},
		"UpdateRoute": func(ctx context.Context) error {
			_, err := c.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: &configv1.Route{Name: "orgs/acme/projects/web/routes/gpt", UpstreamModel: "evil"}, UpdateMask: mask("upstream_model")})
			return err
		},
		"DeleteRoute": func(ctx context.Context) error {
			_, err := c.DeleteRoute(ctx, &configv1.DeleteRouteRequest{Name: "orgs/acme/projects/web/routes/gpt"})
			return err
		},
	}
}

// Every administrative method refuses a project key (PERMISSION_DENIED)
// and a call without a valid key (UNAUTHENTICATED), and changes nothing.
func TestAuthorization(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	h.seed(t, "sk-authz-credential")
	before, err := h.client.WatchConfig(h.internal, &configv1.WatchConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snapBefore, err := before.Recv()
	if err != nil {
		t.Fatal(err)
	}

	bad := h.anon
	bad = appendAuth(bad, "Bearer moat_"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	all := rpcs(h.client)
	if len(all) != 20 {
		t.Fatalf("rpcs covers %d methods, want the 20 administrative ones", len(all))
	}
	for name, call := range all {
		if err := call(h.project); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s with a project key = %v, want PermissionDenied", name, err)
		}
		if err := call(h.anon); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s without a key = %v, want Unauthenticated", name, err)
		}
		if err := call(bad); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s with an unknown key = %v, want Unauthenticated", name, err)
		}
		if err := call(h.internal); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s with only the internal token = %v, want Unauthenticated", name, err)
		}
	}

	// WatchConfig is for the internal token only, not even an admin key.
	for name, ctx := range map[string]context.Context{"admin key": h.admin, "no credentials": h.anon,
		"wrong token": appendToken(h.anon, "not-the-internal-token")} {
		stream, err := h.client.WatchConfig(ctx, &configv1.WatchConfigRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("WatchConfig with %s = %v, want Unauthenticated", name, err)
		}
	}

	after, err := h.client.WatchConfig(h.internal, &configv1.WatchConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snapAfter, err := after.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snapBefore, snapAfter, protocmp.Transform()); diff != "" {
		t.Errorf("refused calls changed the configuration (-before +after):\n%s", diff)
	}
}

func TestToStatusHidesInternalErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	h.pool.Close() // every store call now fails
	_, err := h.client.GetOrganization(h.admin, &configv1.GetOrganizationRequest{Name: "orgs/acme"})
	st, _ := status.FromError(err)
	if st.Code() != codes.Internal && st.Code() != codes.Unavailable {
		t.Errorf("GetOrganization on a closed pool = %v, want Internal or Unavailable", err)
	}
	if st.Message() != "internal error" && st.Message() != "configuration store unavailable; retry later" {
		t.Errorf("status message %q looks like a leaked internal error", st.Message())
	}
}
