package grpcapi

import (
	"context"
	"errors"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

// authorize is authn.Require for identity's methods, which also need to
// know who the caller is beyond passing: a signed-in user (whose own keys
// members manage), and whether they administer the organization.
func authorize(ctx context.Context, resource string, need identityv1.OrgRole) (identity.Actor, error) {
	if err := authn.Require(ctx, resource, need); err != nil {
		return identity.Actor{}, err
	}
	p, _ := authn.FromContext(ctx)
	a := identity.Actor{
		PlatformAdmin: p.IsPlatformAdmin(),
		Admin:         authn.Require(ctx, resource, identityv1.OrgRole_ORG_ROLE_ADMIN) == nil,
	}
	if p.IsUser() {
		a.User = p.Subject
	}
	return a, nil
}

// GetCaller implements identityv1.IdentityServiceServer. A signed-in user
// without memberships joins, just in time, the organizations whose
// identity providers they came through; a failure to do so (Keycloak down)
// is logged and the caller is described as they are.
func (s *Server) GetCaller(ctx context.Context, _ *identityv1.GetCallerRequest) (*identityv1.GetCallerResponse, error) {
	p, ok := authn.FromContext(ctx)
	if !ok {
		return nil, toStatus(authn.ErrUnauthenticated)
	}
	resp := &identityv1.GetCallerResponse{Principal: p.Subject, PlatformAdmin: p.IsPlatformAdmin(), Email: p.Email}
	userID := identity.UserIDOf(p.Subject)
	if !p.IsUser() || userID == "" {
		return resp, nil
	}
	ms, err := s.svc.Memberships(ctx, userID)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	if len(ms) == 0 {
		res, err := s.svc.Join(ctx, callOf(ctx, identityv1.IdentityService_GetCaller_FullMethodName, ""), userID)
		switch {
		case err != nil:
			s.log.WarnContext(ctx, "just-in-time membership failed; the user stays without one for now", "user", p.Subject, "err", err)
		case res.Refused != "":
			s.log.InfoContext(ctx, "just-in-time membership refused", "user", p.Subject, "reason", res.Refused)
		}
		ms = res.Joined
	}
	for _, m := range ms {
		resp.Memberships = append(resp.Memberships, toMember(m))
	}
	return resp, nil
}

// CreateMember implements identityv1.IdentityServiceServer.
func (s *Server) CreateMember(ctx context.Context, req *identityv1.CreateMemberRequest) (*identityv1.CreateMemberResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_CreateMember_FullMethodName, "")
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	m, err := s.svc.CreateMember(ctx, call, req.GetParent(), req.GetMemberId(), fromOrgRole(req.GetMember().GetRole()))
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	return &identityv1.CreateMemberResponse{Member: toMember(m)}, nil
}

// GetMember implements identityv1.IdentityServiceServer.
func (s *Server) GetMember(ctx context.Context, req *identityv1.GetMemberRequest) (*identityv1.GetMemberResponse, error) {
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	m, err := s.svc.GetMember(ctx, req.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &identityv1.GetMemberResponse{Member: toMember(m)}, nil
}

// ListMembers implements identityv1.IdentityServiceServer.
func (s *Server) ListMembers(ctx context.Context, req *identityv1.ListMembersRequest) (*identityv1.ListMembersResponse, error) {
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	ms, next, err := s.svc.ListMembers(ctx, req.GetParent(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &identityv1.ListMembersResponse{NextPageToken: next}
	for _, m := range ms {
		resp.Members = append(resp.Members, toMember(m))
	}
	return resp, nil
}

// UpdateMember implements identityv1.IdentityServiceServer.
func (s *Server) UpdateMember(ctx context.Context, req *identityv1.UpdateMemberRequest) (*identityv1.UpdateMemberResponse, error) {
	name := req.GetMember().GetName()
	call := callOf(ctx, identityv1.IdentityService_UpdateMember_FullMethodName, "")
	actor, err := authorize(ctx, name, identityv1.OrgRole_ORG_ROLE_ADMIN)
	if err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	if paths := req.GetUpdateMask().GetPaths(); len(paths) != 1 || paths[0] != "role" {
		return nil, s.refuse(ctx, call, name, &identity.ValidationError{Field: "update_mask", Reason: `must be "role": the only field of a membership that changes`})
	}
	m, err := s.svc.UpdateMember(ctx, call, actor, name, fromOrgRole(req.GetMember().GetRole()))
	if err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	return &identityv1.UpdateMemberResponse{Member: toMember(m)}, nil
}

// DeleteMember implements identityv1.IdentityServiceServer.
func (s *Server) DeleteMember(ctx context.Context, req *identityv1.DeleteMemberRequest) (*identityv1.DeleteMemberResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_DeleteMember_FullMethodName, "")
	actor, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	n, err := s.svc.DeleteMember(ctx, call, actor, req.GetName())
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.DeleteMemberResponse{RevokedKeys: int32(min(n, 1<<31-1))}, nil //nolint:gosec // clamped
}

// CreateIdentityProvider implements identityv1.IdentityServiceServer.
func (s *Server) CreateIdentityProvider(ctx context.Context, req *identityv1.CreateIdentityProviderRequest) (*identityv1.CreateIdentityProviderResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_CreateIdentityProvider_FullMethodName, "")
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	if req.GetIdentityProvider() == nil {
		return nil, s.refuse(ctx, call, req.GetParent(), &identity.ValidationError{Field: "identity_provider", Reason: "is required"})
	}
	in, secret := fromIdP(req.GetIdentityProvider())
	p, err := s.svc.CreateIdentityProvider(ctx, call, req.GetParent(), req.GetIdentityProviderId(), in, secret)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	return &identityv1.CreateIdentityProviderResponse{IdentityProvider: s.toIdP(p)}, nil
}

// GetIdentityProvider implements identityv1.IdentityServiceServer.
func (s *Server) GetIdentityProvider(ctx context.Context, req *identityv1.GetIdentityProviderRequest) (*identityv1.GetIdentityProviderResponse, error) {
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	p, err := s.svc.GetIdentityProvider(ctx, req.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &identityv1.GetIdentityProviderResponse{IdentityProvider: s.toIdP(p)}, nil
}

// ListIdentityProviders implements identityv1.IdentityServiceServer.
func (s *Server) ListIdentityProviders(ctx context.Context, req *identityv1.ListIdentityProvidersRequest) (*identityv1.ListIdentityProvidersResponse, error) {
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	ps, next, err := s.svc.ListIdentityProviders(ctx, req.GetParent(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &identityv1.ListIdentityProvidersResponse{NextPageToken: next}
	for _, p := range ps {
		resp.IdentityProviders = append(resp.IdentityProviders, s.toIdP(p))
	}
	return resp, nil
}

// UpdateIdentityProvider implements identityv1.IdentityServiceServer.
func (s *Server) UpdateIdentityProvider(ctx context.Context, req *identityv1.UpdateIdentityProviderRequest) (*identityv1.UpdateIdentityProviderResponse, error) {
	name := req.GetIdentityProvider().GetName()
	call := callOf(ctx, identityv1.IdentityService_UpdateIdentityProvider_FullMethodName, "")
	if _, err := authorize(ctx, name, identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	in, secret := fromIdP(req.GetIdentityProvider())
	p, err := s.svc.UpdateIdentityProvider(ctx, call, name, in, secret, req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	return &identityv1.UpdateIdentityProviderResponse{IdentityProvider: s.toIdP(p)}, nil
}

// DeleteIdentityProvider implements identityv1.IdentityServiceServer.
func (s *Server) DeleteIdentityProvider(ctx context.Context, req *identityv1.DeleteIdentityProviderRequest) (*identityv1.DeleteIdentityProviderResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_DeleteIdentityProvider_FullMethodName, "")
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	at, err := s.svc.DeleteIdentityProvider(ctx, call, req.GetName())
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.DeleteIdentityProviderResponse{DeleteTime: timestamppb.New(at)}, nil
}

func fromOrgRole(r identityv1.OrgRole) identity.OrgRole {
	switch r {
	case identityv1.OrgRole_ORG_ROLE_ADMIN:
		return identity.OrgAdmin
	case identityv1.OrgRole_ORG_ROLE_MEMBER:
		return identity.OrgMember
	default:
		return 0
	}
}

func toOrgRole(r identity.OrgRole) identityv1.OrgRole {
	switch r {
	case identity.OrgAdmin:
		return identityv1.OrgRole_ORG_ROLE_ADMIN
	case identity.OrgMember:
		return identityv1.OrgRole_ORG_ROLE_MEMBER
	default:
		return identityv1.OrgRole_ORG_ROLE_UNSPECIFIED
	}
}

func toMember(m identity.Member) *identityv1.Member {
	src := identityv1.Member_SOURCE_ADMIN
	if m.Source == identity.SourceJustInTime {
		src = identityv1.Member_SOURCE_JUST_IN_TIME
	}
	return &identityv1.Member{
		Name:             m.Name(),
		User:             m.User(),
		Role:             toOrgRole(m.Role),
		Source:           src,
		IdentityProvider: m.IdentityProvider,
		Email:            m.Email,
		CreateTime:       timestamppb.New(m.CreateTime),
		UpdateTime:       timestamppb.New(m.UpdateTime),
	}
}

func toMembershipEntry(m identity.Member) *identityv1.MembershipEntry {
	e := &identityv1.MembershipEntry{User: m.User(), Organization: m.Organization}
	if m.Active() {
		e.Role = toOrgRole(m.Role)
	}
	return e
}

func toSnapshot(keys []identity.Key, members []identity.Member) *identityv1.KeyIndexSnapshot {
	snap := &identityv1.KeyIndexSnapshot{
		Entries:     make([]*identityv1.KeyIndexEntry, len(keys)),
		Memberships: make([]*identityv1.MembershipEntry, len(members)),
	}
	for i, k := range keys {
		snap.Entries[i] = toEntry(k)
	}
	for i, m := range members {
		snap.Memberships[i] = toMembershipEntry(m)
	}
	return snap
}

// fromIdP maps a request's provider to the domain, and returns its client
// secret apart: the domain never holds it.
func fromIdP(in *identityv1.IdentityProvider) (identity.Provider, string) {
	p := identity.Provider{
		DisplayName:  in.GetDisplayName(),
		DefaultRole:  fromOrgRole(in.GetDefaultRole()),
		EmailDomains: slices.Clone(in.GetEmailDomains()),
	}
	var secret string
	if o := in.GetOidc(); o != nil {
		p.OIDC = &identity.OIDCSettings{Issuer: o.GetIssuer(), ClientID: o.GetClientId(),
			Scopes: slices.Clone(o.GetScopes()), GroupsClaim: o.GetGroupsClaim()}
		secret = o.GetClientSecret()
	}
	if sm := in.GetSaml(); sm != nil {
		p.SAML = &identity.SAMLSettings{SSOURL: sm.GetSsoUrl(), EntityID: sm.GetEntityId(),
			SigningCertificate: sm.GetSigningCertificate(), GroupsAttribute: sm.GetGroupsAttribute()}
	}
	for _, gr := range in.GetGroupRoleMappings() {
		p.GroupRoles = append(p.GroupRoles, identity.GroupRole{Group: gr.GetGroup(), Role: fromOrgRole(gr.GetRole())})
	}
	return p, secret
}

func (s *Server) toIdP(p identity.Provider) *identityv1.IdentityProvider {
	out := &identityv1.IdentityProvider{
		Name:         p.Name(),
		DisplayName:  p.DisplayName,
		DefaultRole:  toOrgRole(p.DefaultRole),
		EmailDomains: slices.Clone(p.EmailDomains),
		Alias:        p.Alias(),
		RedirectUri:  s.svc.RedirectURI(p),
		CreateTime:   timestamppb.New(p.CreateTime),
		UpdateTime:   timestamppb.New(p.UpdateTime),
	}
	switch {
	case p.OIDC != nil:
		out.Protocol = &identityv1.IdentityProvider_Oidc{Oidc: &identityv1.OidcConfig{Issuer: p.OIDC.Issuer,
			ClientId: p.OIDC.ClientID, Scopes: slices.Clone(p.OIDC.Scopes), GroupsClaim: p.OIDC.GroupsClaim}}
	case p.SAML != nil:
		out.Protocol = &identityv1.IdentityProvider_Saml{Saml: &identityv1.SamlConfig{SsoUrl: p.SAML.SSOURL,
			EntityId: p.SAML.EntityID, SigningCertificate: p.SAML.SigningCertificate, GroupsAttribute: p.SAML.GroupsAttribute}}
	}
	for _, gr := range p.GroupRoles {
		out.GroupRoleMappings = append(out.GroupRoleMappings, &identityv1.GroupRoleMapping{Group: gr.Group, Role: toOrgRole(gr.Role)})
	}
	return out
}

// The domain's not-found and already-exists errors: their messages name
// the kind of resource and nothing of the request.
var (
	notFound = []error{identity.ErrMemberNotFound, identity.ErrIdPNotFound, identity.ErrServiceAccountNotFound,
		identity.ErrAgentNotFound, identity.ErrNotFound}
	exists = []error{identity.ErrMemberExists, identity.ErrIdPExists, identity.ErrServiceAccountExists, identity.ErrAgentExists}
)

// kindOf returns the first of kinds that err is, or nil.
func kindOf(err error, kinds []error) error {
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// messageFrom is err's text from kind's on, without the wrapping context:
// the rest is the caller's own input or Keycloak's words, which help the
// admin and never carry the client secret (see keycloak.Admin).
func messageFrom(err, kind error) string {
	msg := err.Error()
	if i := strings.Index(msg, kind.Error()); i >= 0 {
		msg = msg[i:]
	}
	return msg
}
