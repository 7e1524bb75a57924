package grpcapi

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

// revokedCount fits a count of revoked keys into the responses' int32.
func revokedCount(n int) int32 {
	return int32(min(n, 1<<31-1)) //nolint:gosec // clamped
}

// CreateServiceAccount implements identityv1.IdentityServiceServer.
func (s *Server) CreateServiceAccount(ctx context.Context, req *identityv1.CreateServiceAccountRequest) (*identityv1.CreateServiceAccountResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_CreateServiceAccount_FullMethodName, "")
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	if req.GetServiceAccount() == nil {
		return nil, s.refuse(ctx, call, req.GetParent(), &identity.ValidationError{Field: "service_account", Reason: "is required"})
	}
	a, err := s.svc.CreateServiceAccount(ctx, call, req.GetParent(), req.GetServiceAccountId(), fromServiceAccount(req.GetServiceAccount()))
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	return &identityv1.CreateServiceAccountResponse{ServiceAccount: toServiceAccount(a)}, nil
}

// GetServiceAccount implements identityv1.IdentityServiceServer.
func (s *Server) GetServiceAccount(ctx context.Context, req *identityv1.GetServiceAccountRequest) (*identityv1.GetServiceAccountResponse, error) {
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	a, err := s.svc.GetServiceAccount(ctx, req.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &identityv1.GetServiceAccountResponse{ServiceAccount: toServiceAccount(a)}, nil
}

// ListServiceAccounts implements identityv1.IdentityServiceServer.
func (s *Server) ListServiceAccounts(ctx context.Context, req *identityv1.ListServiceAccountsRequest) (*identityv1.ListServiceAccountsResponse, error) {
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	as, next, err := s.svc.ListServiceAccounts(ctx, req.GetParent(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &identityv1.ListServiceAccountsResponse{NextPageToken: next, ServiceAccounts: make([]*identityv1.ServiceAccount, len(as))}
	for i, a := range as {
		resp.ServiceAccounts[i] = toServiceAccount(a)
	}
	return resp, nil
}

// UpdateServiceAccount implements identityv1.IdentityServiceServer.
func (s *Server) UpdateServiceAccount(ctx context.Context, req *identityv1.UpdateServiceAccountRequest) (*identityv1.UpdateServiceAccountResponse, error) {
	name := req.GetServiceAccount().GetName()
	call := callOf(ctx, identityv1.IdentityService_UpdateServiceAccount_FullMethodName, "")
	if _, err := authorize(ctx, name, identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	a, err := s.svc.UpdateServiceAccount(ctx, call, name, fromServiceAccount(req.GetServiceAccount()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	return &identityv1.UpdateServiceAccountResponse{ServiceAccount: toServiceAccount(a)}, nil
}

// DeleteServiceAccount implements identityv1.IdentityServiceServer.
func (s *Server) DeleteServiceAccount(ctx context.Context, req *identityv1.DeleteServiceAccountRequest) (*identityv1.DeleteServiceAccountResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_DeleteServiceAccount_FullMethodName, "")
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	n, err := s.svc.DeleteServiceAccount(ctx, call, req.GetName())
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.DeleteServiceAccountResponse{RevokedKeys: revokedCount(n)}, nil
}

// CreateAgent implements identityv1.IdentityServiceServer.
func (s *Server) CreateAgent(ctx context.Context, req *identityv1.CreateAgentRequest) (*identityv1.CreateAgentResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_CreateAgent_FullMethodName, "")
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	if req.GetAgent() == nil {
		return nil, s.refuse(ctx, call, req.GetParent(), &identity.ValidationError{Field: "agent", Reason: "is required"})
	}
	a, err := s.svc.CreateAgent(ctx, call, req.GetParent(), req.GetAgentId(), fromAgent(req.GetAgent()))
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	return &identityv1.CreateAgentResponse{Agent: toAgent(a)}, nil
}

// GetAgent implements identityv1.IdentityServiceServer.
func (s *Server) GetAgent(ctx context.Context, req *identityv1.GetAgentRequest) (*identityv1.GetAgentResponse, error) {
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	a, err := s.svc.GetAgent(ctx, req.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &identityv1.GetAgentResponse{Agent: toAgent(a)}, nil
}

// ListAgents implements identityv1.IdentityServiceServer.
func (s *Server) ListAgents(ctx context.Context, req *identityv1.ListAgentsRequest) (*identityv1.ListAgentsResponse, error) {
	if _, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	as, next, err := s.svc.ListAgents(ctx, req.GetParent(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &identityv1.ListAgentsResponse{NextPageToken: next, Agents: make([]*identityv1.Agent, len(as))}
	for i, a := range as {
		resp.Agents[i] = toAgent(a)
	}
	return resp, nil
}

// UpdateAgent implements identityv1.IdentityServiceServer.
func (s *Server) UpdateAgent(ctx context.Context, req *identityv1.UpdateAgentRequest) (*identityv1.UpdateAgentResponse, error) {
	name := req.GetAgent().GetName()
	call := callOf(ctx, identityv1.IdentityService_UpdateAgent_FullMethodName, "")
	if _, err := authorize(ctx, name, identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	a, err := s.svc.UpdateAgent(ctx, call, name, fromAgent(req.GetAgent()), req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, s.refuse(ctx, call, name, err)
	}
	return &identityv1.UpdateAgentResponse{Agent: toAgent(a)}, nil
}

// DeleteAgent implements identityv1.IdentityServiceServer.
func (s *Server) DeleteAgent(ctx context.Context, req *identityv1.DeleteAgentRequest) (*identityv1.DeleteAgentResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_DeleteAgent_FullMethodName, "")
	if _, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	n, err := s.svc.DeleteAgent(ctx, call, req.GetName())
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.DeleteAgentResponse{RevokedKeys: revokedCount(n)}, nil
}

// fromServiceAccount maps the fields a caller may set; the name and times
// are the server's.
func fromServiceAccount(in *identityv1.ServiceAccount) identity.ServiceAccount {
	return identity.ServiceAccount{DisplayName: in.GetDisplayName(), Description: in.GetDescription()}
}

func toServiceAccount(a identity.ServiceAccount) *identityv1.ServiceAccount {
	return &identityv1.ServiceAccount{
		Name:        a.Name(),
		DisplayName: a.DisplayName,
		Description: a.Description,
		CreateTime:  timestamppb.New(a.CreateTime),
		UpdateTime:  timestamppb.New(a.UpdateTime),
	}
}

// fromAgent maps the fields a caller may set, like fromServiceAccount.
func fromAgent(in *identityv1.Agent) identity.Agent {
	return identity.Agent{
		DisplayName: in.GetDisplayName(),
		Description: in.GetDescription(),
		Owner:       in.GetOwner(),
		RiskTier:    fromRiskTier(in.GetRiskTier()),
		ActsFor:     in.GetActsFor(),
	}
}

func toAgent(a identity.Agent) *identityv1.Agent {
	return &identityv1.Agent{
		Name:        a.Name(),
		DisplayName: a.DisplayName,
		Description: a.Description,
		Owner:       a.Owner,
		RiskTier:    toRiskTier(a.RiskTier),
		ActsFor:     a.ActsFor,
		CreateTime:  timestamppb.New(a.CreateTime),
		UpdateTime:  timestamppb.New(a.UpdateTime),
	}
}

func fromRiskTier(t identityv1.RiskTier) identity.RiskTier {
	switch t {
	case identityv1.RiskTier_RISK_TIER_LOW:
		return identity.RiskLow
	case identityv1.RiskTier_RISK_TIER_MEDIUM:
		return identity.RiskMedium
	case identityv1.RiskTier_RISK_TIER_HIGH:
		return identity.RiskHigh
	case identityv1.RiskTier_RISK_TIER_CRITICAL:
		return identity.RiskCritical
	default:
		return 0
	}
}

func toRiskTier(t identity.RiskTier) identityv1.RiskTier {
	switch t {
	case identity.RiskLow:
		return identityv1.RiskTier_RISK_TIER_LOW
	case identity.RiskMedium:
		return identityv1.RiskTier_RISK_TIER_MEDIUM
	case identity.RiskHigh:
		return identityv1.RiskTier_RISK_TIER_HIGH
	case identity.RiskCritical:
		return identityv1.RiskTier_RISK_TIER_CRITICAL
	default:
		return identityv1.RiskTier_RISK_TIER_UNSPECIFIED
	}
}
