package grpcapi

import (
	"context"

	"github.com/moat-ai/moat/libs/authn"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Every administrative method starts with authn.Require (platform admins
// for organizations themselves, org admins for changes and for providers,
// members for reading projects and routes). Mutating
// methods build their audit record first: a success writes it with the
// change (in the store's transaction), anything else through refuse.

// read maps the error of a read; reads are not audited.
func (s *Server) read(ctx context.Context, err error) error { return s.status(ctx, err) }

// --- organizations

// CreateOrganization implements configv1.ConfigServiceServer.
func (s *Server) CreateOrganization(ctx context.Context, req *configv1.CreateOrganizationRequest) (*configv1.CreateOrganizationResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_CreateOrganization_FullMethodName, "", req.GetRequestId())
	if err := authn.RequirePlatformAdmin(ctx); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	o, err := s.svc.CreateOrganization(ctx, a, req.GetOrganizationId(), organizationIn(req.GetOrganization()), req.GetRequestId())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.CreateOrganizationResponse{Organization: organizationOut(o)}, nil
}

// GetOrganization implements configv1.ConfigServiceServer.
func (s *Server) GetOrganization(ctx context.Context, req *configv1.GetOrganizationRequest) (*configv1.GetOrganizationResponse, error) {
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_MEMBER); err != nil {
		return nil, s.read(ctx, err)
	}
	o, err := s.svc.Organization(ctx, req.GetName())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	return &configv1.GetOrganizationResponse{Organization: organizationOut(o)}, nil
}

// ListOrganizations implements configv1.ConfigServiceServer.
func (s *Server) ListOrganizations(ctx context.Context, req *configv1.ListOrganizationsRequest) (*configv1.ListOrganizationsResponse, error) {
	if err := authn.RequirePlatformAdmin(ctx); err != nil {
		return nil, s.read(ctx, err)
	}
	items, next, err := s.svc.ListOrganizations(ctx, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	resp := &configv1.ListOrganizationsResponse{NextPageToken: next}
	for _, o := range items {
		resp.Organizations = append(resp.Organizations, organizationOut(o))
	}
	return resp, nil
}

// UpdateOrganization implements configv1.ConfigServiceServer.
func (s *Server) UpdateOrganization(ctx context.Context, req *configv1.UpdateOrganizationRequest) (*configv1.UpdateOrganizationResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_UpdateOrganization_FullMethodName, req.GetOrganization().GetName(), "")
	if err := authn.Require(ctx, req.GetOrganization().GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	o, err := s.svc.UpdateOrganization(ctx, a, organizationIn(req.GetOrganization()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.UpdateOrganizationResponse{Organization: organizationOut(o)}, nil
}

// DeleteOrganization implements configv1.ConfigServiceServer.
func (s *Server) DeleteOrganization(ctx context.Context, req *configv1.DeleteOrganizationRequest) (*configv1.DeleteOrganizationResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_DeleteOrganization_FullMethodName, req.GetName(), "")
	if err := authn.RequirePlatformAdmin(ctx); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	if err := s.svc.DeleteOrganization(ctx, a, req.GetName()); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.DeleteOrganizationResponse{}, nil
}

// --- projects

// CreateProject implements configv1.ConfigServiceServer.
func (s *Server) CreateProject(ctx context.Context, req *configv1.CreateProjectRequest) (*configv1.CreateProjectResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_CreateProject_FullMethodName, req.GetParent(), req.GetRequestId())
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	p, err := s.svc.CreateProject(ctx, a, req.GetParent(), req.GetProjectId(), projectIn(req.GetProject()), req.GetRequestId())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.CreateProjectResponse{Project: projectOut(p)}, nil
}

// GetProject implements configv1.ConfigServiceServer.
func (s *Server) GetProject(ctx context.Context, req *configv1.GetProjectRequest) (*configv1.GetProjectResponse, error) {
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_MEMBER); err != nil {
		return nil, s.read(ctx, err)
	}
	p, err := s.svc.Project(ctx, req.GetName())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	return &configv1.GetProjectResponse{Project: projectOut(p)}, nil
}

// ListProjects implements configv1.ConfigServiceServer.
func (s *Server) ListProjects(ctx context.Context, req *configv1.ListProjectsRequest) (*configv1.ListProjectsResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_MEMBER); err != nil {
		return nil, s.read(ctx, err)
	}
	items, next, err := s.svc.ListProjects(ctx, req.GetParent(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	resp := &configv1.ListProjectsResponse{NextPageToken: next}
	for _, p := range items {
		resp.Projects = append(resp.Projects, projectOut(p))
	}
	return resp, nil
}

// UpdateProject implements configv1.ConfigServiceServer.
func (s *Server) UpdateProject(ctx context.Context, req *configv1.UpdateProjectRequest) (*configv1.UpdateProjectResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_UpdateProject_FullMethodName, req.GetProject().GetName(), "")
	if err := authn.Require(ctx, req.GetProject().GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	p, err := s.svc.UpdateProject(ctx, a, projectIn(req.GetProject()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.UpdateProjectResponse{Project: projectOut(p)}, nil
}

// DeleteProject implements configv1.ConfigServiceServer.
func (s *Server) DeleteProject(ctx context.Context, req *configv1.DeleteProjectRequest) (*configv1.DeleteProjectResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_DeleteProject_FullMethodName, req.GetName(), "")
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	if err := s.svc.DeleteProject(ctx, a, req.GetName()); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.DeleteProjectResponse{}, nil
}

// --- providers

// CreateProvider implements configv1.ConfigServiceServer.
func (s *Server) CreateProvider(ctx context.Context, req *configv1.CreateProviderRequest) (*configv1.CreateProviderResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_CreateProvider_FullMethodName, req.GetParent(), req.GetRequestId())
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	p, err := s.svc.CreateProvider(ctx, a, req.GetParent(), req.GetProviderId(), providerIn(req.GetProvider()),
		req.GetProvider().GetCredential(), req.GetRequestId())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.CreateProviderResponse{Provider: providerOut(p)}, nil
}

// GetProvider implements configv1.ConfigServiceServer.
func (s *Server) GetProvider(ctx context.Context, req *configv1.GetProviderRequest) (*configv1.GetProviderResponse, error) {
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.read(ctx, err)
	}
	p, err := s.svc.Provider(ctx, req.GetName())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	return &configv1.GetProviderResponse{Provider: providerOut(p)}, nil
}

// ListProviders implements configv1.ConfigServiceServer.
func (s *Server) ListProviders(ctx context.Context, req *configv1.ListProvidersRequest) (*configv1.ListProvidersResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.read(ctx, err)
	}
	items, next, err := s.svc.ListProviders(ctx, req.GetParent(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	resp := &configv1.ListProvidersResponse{NextPageToken: next}
	for _, p := range items {
		resp.Providers = append(resp.Providers, providerOut(p))
	}
	return resp, nil
}

// UpdateProvider implements configv1.ConfigServiceServer.
func (s *Server) UpdateProvider(ctx context.Context, req *configv1.UpdateProviderRequest) (*configv1.UpdateProviderResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_UpdateProvider_FullMethodName, req.GetProvider().GetName(), "")
	if err := authn.Require(ctx, req.GetProvider().GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	p, err := s.svc.UpdateProvider(ctx, a, providerIn(req.GetProvider()), req.GetProvider().GetCredential(), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.UpdateProviderResponse{Provider: providerOut(p)}, nil
}

// DeleteProvider implements configv1.ConfigServiceServer.
func (s *Server) DeleteProvider(ctx context.Context, req *configv1.DeleteProviderRequest) (*configv1.DeleteProviderResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_DeleteProvider_FullMethodName, req.GetName(), "")
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	if err := s.svc.DeleteProvider(ctx, a, req.GetName()); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.DeleteProviderResponse{}, nil
}

// --- routes

// CreateRoute implements configv1.ConfigServiceServer.
func (s *Server) CreateRoute(ctx context.Context, req *configv1.CreateRouteRequest) (*configv1.CreateRouteResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_CreateRoute_FullMethodName, req.GetParent(), req.GetRequestId())
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	r, err := s.svc.CreateRoute(ctx, a, req.GetParent(), req.GetRouteId(), routeIn(req.GetRoute()), req.GetRequestId())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.CreateRouteResponse{Route: routeOut(r)}, nil
}

// GetRoute implements configv1.ConfigServiceServer.
func (s *Server) GetRoute(ctx context.Context, req *configv1.GetRouteRequest) (*configv1.GetRouteResponse, error) {
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_MEMBER); err != nil {
		return nil, s.read(ctx, err)
	}
	r, err := s.svc.Route(ctx, req.GetName())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	return &configv1.GetRouteResponse{Route: routeOut(r)}, nil
}

// ListRoutes implements configv1.ConfigServiceServer.
func (s *Server) ListRoutes(ctx context.Context, req *configv1.ListRoutesRequest) (*configv1.ListRoutesResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_MEMBER); err != nil {
		return nil, s.read(ctx, err)
	}
	items, next, err := s.svc.ListRoutes(ctx, req.GetParent(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.read(ctx, err)
	}
	resp := &configv1.ListRoutesResponse{NextPageToken: next}
	for _, r := range items {
		resp.Routes = append(resp.Routes, routeOut(r))
	}
	return resp, nil
}

// UpdateRoute implements configv1.ConfigServiceServer.
func (s *Server) UpdateRoute(ctx context.Context, req *configv1.UpdateRouteRequest) (*configv1.UpdateRouteResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_UpdateRoute_FullMethodName, req.GetRoute().GetName(), "")
	if err := authn.Require(ctx, req.GetRoute().GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	r, err := s.svc.UpdateRoute(ctx, a, routeIn(req.GetRoute()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.UpdateRouteResponse{Route: routeOut(r)}, nil
}

// DeleteRoute implements configv1.ConfigServiceServer.
func (s *Server) DeleteRoute(ctx context.Context, req *configv1.DeleteRouteRequest) (*configv1.DeleteRouteResponse, error) {
	a := s.auditRecord(ctx, configv1.ConfigService_DeleteRoute_FullMethodName, req.GetName(), "")
	if err := authn.Require(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	if err := s.svc.DeleteRoute(ctx, a, req.GetName()); err != nil {
		return nil, s.refuse(ctx, a, err)
	}
	return &configv1.DeleteRouteResponse{}, nil
}

var _ configv1.ConfigServiceServer = (*Server)(nil)
