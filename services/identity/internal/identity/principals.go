package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/pagetoken"
)

// ServiceAccount is a principal of one project that is not a person: a
// workload that calls the gateway with the keys it owns and never signs
// in.
type ServiceAccount struct {
	// Project is orgs/{org}/projects/{project}; ID the last segment of the
	// name, unique in the project.
	Project, ID              string
	DisplayName, Description string
	CreateTime, UpdateTime   time.Time
}

// Name is the service account's resource name,
// orgs/{org}/projects/{project}/serviceAccounts/{id}.
func (a ServiceAccount) Name() string { return a.Project + "/serviceAccounts/" + a.ID }

// RiskTier is how much harm an agent could do.
type RiskTier int

// The risk tiers, lowest first. The zero value is no tier, which no agent
// has.
const (
	RiskLow RiskTier = iota + 1
	RiskMedium
	RiskHigh
	RiskCritical
)

// String returns the tier as stored: "low", "medium", "high" or
// "critical".
func (t RiskTier) String() string {
	switch t {
	case RiskLow:
		return "low"
	case RiskMedium:
		return "medium"
	case RiskHigh:
		return "high"
	case RiskCritical:
		return "critical"
	default:
		return ""
	}
}

// ParseRiskTier is String's inverse; anything else is the zero tier.
func ParseRiskTier(s string) RiskTier {
	for t := RiskLow; t <= RiskCritical; t++ {
		if t.String() == s {
			return t
		}
	}
	return 0
}

// Agent is an AI agent of one project: a principal that calls the gateway
// with the keys it owns and never signs in.
type Agent struct {
	// Project is orgs/{org}/projects/{project}; ID the last segment of the
	// name, unique in the project.
	Project, ID              string
	DisplayName, Description string
	// Owner is users/{user}: the member accountable for the agent.
	Owner    string
	RiskTier RiskTier
	// ActsFor is users/{user}, the member whose authority the agent
	// exercises, or "".
	ActsFor                string
	CreateTime, UpdateTime time.Time
}

// Name is the agent's resource name,
// orgs/{org}/projects/{project}/agents/{id}.
func (a Agent) Name() string { return a.Project + "/agents/" + a.ID }

// Users are the members the agent names: its owner and, if set, the user
// it acts for. Each must be a member of its organization.
func (a Agent) Users() []string {
	if a.ActsFor == "" || a.ActsFor == a.Owner {
		return []string{a.Owner}
	}
	return []string{a.Owner, a.ActsFor}
}

// Errors of service accounts and agents.
var (
	// ErrServiceAccountNotFound reports a service account that does not
	// exist.
	ErrServiceAccountNotFound = errors.New("service account not found")
	// ErrServiceAccountExists reports a service account id taken in its
	// project.
	ErrServiceAccountExists = errors.New("a service account with this id exists in the project")
	// ErrAgentNotFound reports an agent that does not exist.
	ErrAgentNotFound = errors.New("agent not found")
	// ErrAgentExists reports an agent id taken in its project.
	ErrAgentExists = errors.New("an agent with this id exists in the project")
	// ErrAgentUserNotMember reports an agent's owner or acts_for user who
	// is not a member of the agent's organization.
	ErrAgentUserNotMember = errors.New("an agent's owner and acts_for must be members of its organization")
	// ErrOwnerNotFound reports a key owner that names a service account
	// or agent its project does not have.
	ErrOwnerNotFound = errors.New("the key's owner is not a service account or agent of its project")
	// ErrMemberHasAgents reports a membership that cannot end because
	// agents of the organization name the user as owner or acts_for: an
	// agent always has an accountable member.
	ErrMemberHasAgents = errors.New("the user owns agents of the organization, or agents act for them; " +
		"give those agents another owner and acts_for, or delete them, first")
)

// PrincipalKind says what a principal name names.
type PrincipalKind int

// The kinds of principals a key may be owned by.
const (
	PrincipalUser PrincipalKind = iota + 1
	PrincipalServiceAccount
	PrincipalAgent
)

// ParsePrincipal parses a key owner: users/{user}, or the full name of a
// service account or agent. It returns the kind, the project of a service
// account or agent ("" for a user) and the last segment of the name; ok is
// false for anything else.
func ParsePrincipal(name string) (kind PrincipalKind, project, id string, ok bool) {
	if id := UserIDOf(name); id != "" {
		return PrincipalUser, "", id, true
	}
	if project, id, err := parseServiceAccountName(name); err == nil {
		return PrincipalServiceAccount, project, id, true
	}
	if project, id, err := parseAgentName(name); err == nil {
		return PrincipalAgent, project, id, true
	}
	return 0, "", "", false
}

// parseServiceAccountName splits
// orgs/{org}/projects/{project}/serviceAccounts/{id}.
func parseServiceAccountName(name string) (project, id string, err error) {
	project, id, ok := splitProjectChild(name, "serviceAccounts")
	if !ok {
		return "", "", errors.New("must be orgs/{org}/projects/{project}/serviceAccounts/{service_account}")
	}
	return project, id, nil
}

// parseAgentName splits orgs/{org}/projects/{project}/agents/{id}.
func parseAgentName(name string) (project, id string, err error) {
	project, id, ok := splitProjectChild(name, "agents")
	if !ok {
		return "", "", errors.New("must be orgs/{org}/projects/{project}/agents/{agent}")
	}
	return project, id, nil
}

// splitProjectChild splits orgs/{org}/projects/{project}/{collection}/{id}
// by position, so that an organization or project whose id equals the
// collection's name ("agents") does not confuse it.
func splitProjectChild(name, collection string) (project, id string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 6 || parts[4] != collection || !idPattern.MatchString(parts[5]) {
		return "", "", false
	}
	project = strings.Join(parts[:4], "/")
	if _, err := ParseProject(project); err != nil {
		return "", "", false
	}
	return project, parts[5], true
}

// Limits of principals' free text.
const maxDescription = 1000

// The fields the update methods may change.
var (
	// ServiceAccountMask lists the fields UpdateServiceAccount may change.
	ServiceAccountMask = []string{"display_name", "description"}
	// AgentMask lists the fields UpdateAgent may change.
	AgentMask = []string{"display_name", "description", "owner", "risk_tier", "acts_for"}
)

const idRule = "must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter"

// checkText validates a principal's display name and description; field
// is the message's field in the request.
func checkText(field, displayName, description string) error {
	if !utf8.ValidString(displayName) || utf8.RuneCountInString(displayName) > maxDisplayName {
		return invalid(field+".display_name", fmt.Sprintf("must be at most %d characters of UTF-8", maxDisplayName))
	}
	if !utf8.ValidString(description) || utf8.RuneCountInString(description) > maxDescription {
		return invalid(field+".description", fmt.Sprintf("must be at most %d characters of UTF-8", maxDescription))
	}
	return nil
}

// checkAgent validates what an agent states; its users' memberships are
// the store's to check, in the transaction that stores it.
func checkAgent(a Agent) error {
	if err := checkText("agent", a.DisplayName, a.Description); err != nil {
		return err
	}
	if UserIDOf(a.Owner) == "" {
		return invalid("agent.owner", "is required: users/{user}, a member of the agent's organization")
	}
	if a.RiskTier < RiskLow || a.RiskTier > RiskCritical {
		return invalid("agent.risk_tier", "is required: RISK_TIER_LOW, RISK_TIER_MEDIUM, RISK_TIER_HIGH or RISK_TIER_CRITICAL")
	}
	if a.ActsFor != "" && UserIDOf(a.ActsFor) == "" {
		return invalid("agent.acts_for", "must be users/{user}, a member of the agent's organization, or empty")
	}
	return nil
}

// checkMask validates an update mask against the fields that may change.
func checkMask(mask, allowed []string) error {
	if len(mask) == 0 {
		return invalid("update_mask", "must list the fields to change: "+strings.Join(allowed, ", "))
	}
	for _, f := range mask {
		if !slices.Contains(allowed, f) {
			return invalid("update_mask", fmt.Sprintf("%q cannot be changed; the fields are %s", f, strings.Join(allowed, ", ")))
		}
	}
	return nil
}

// pageByID returns one page of a list in id order: scope names the list
// (its page tokens open no other), fetch reads at most limit items after
// the id after, id names an item. It returns the token of the next page,
// "" on the last one.
func pageByID[T any](scope string, pageSize int, pageToken string, fetch func(after string, limit int) ([]T, error), id func(T) string) ([]T, string, error) {
	size, err := pageSizeOf(pageSize)
	if err != nil {
		return nil, "", err
	}
	after := ""
	if pageToken != "" {
		if err := pagetoken.Decode(pageToken, scope, &after); err != nil || !idPattern.MatchString(after) {
			return nil, "", invalid("page_token", "is not a page token of this list")
		}
	}
	items, err := fetch(after, size+1)
	if err != nil {
		return nil, "", err
	}
	if len(items) <= size {
		return items, "", nil
	}
	items = items[:size]
	return items, pagetoken.Encode(scope, id(items[size-1])), nil
}

// CreateServiceAccount adds a service account called id to project. The
// call is audited in the transaction of the change.
func (s *Service) CreateServiceAccount(ctx context.Context, call Call, project, id string, a ServiceAccount) (ServiceAccount, error) {
	org, err := ParseProject(project)
	if err != nil {
		return ServiceAccount{}, invalid("parent", err.Error())
	}
	if !idPattern.MatchString(id) {
		return ServiceAccount{}, invalid("service_account_id", idRule)
	}
	if err := checkText("service_account", a.DisplayName, a.Description); err != nil {
		return ServiceAccount{}, err
	}
	now := s.clock()
	a.Project, a.ID, a.CreateTime, a.UpdateTime = project, id, now, now
	if err := s.store.CreateServiceAccount(ctx, a, allowedOn(call, org, a.Name(), now)); err != nil {
		return ServiceAccount{}, fmt.Errorf("create %s: %w", a.Name(), err)
	}
	return a, nil
}

// GetServiceAccount returns the service account called name.
func (s *Service) GetServiceAccount(ctx context.Context, name string) (ServiceAccount, error) {
	project, id, err := parseServiceAccountName(name)
	if err != nil {
		return ServiceAccount{}, invalid("name", err.Error())
	}
	a, err := s.store.GetServiceAccount(ctx, project, id)
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("get %s: %w", name, err)
	}
	return a, nil
}

// ListServiceAccounts returns a page of project's service accounts in id
// order, and the token of the next page ("" on the last one).
func (s *Service) ListServiceAccounts(ctx context.Context, project string, pageSize int, pageToken string) ([]ServiceAccount, string, error) {
	if _, err := ParseProject(project); err != nil {
		return nil, "", invalid("parent", err.Error())
	}
	as, next, err := pageByID(project+"/serviceAccounts", pageSize, pageToken, func(after string, limit int) ([]ServiceAccount, error) {
		return s.store.ListServiceAccounts(ctx, project, after, limit)
	}, func(a ServiceAccount) string { return a.ID })
	if err != nil {
		return nil, "", fmt.Errorf("list service accounts of %s: %w", project, err)
	}
	return as, next, nil
}

// UpdateServiceAccount applies the fields of in that mask lists to the
// service account called name. The call is audited in the transaction of
// the change.
func (s *Service) UpdateServiceAccount(ctx context.Context, call Call, name string, in ServiceAccount, mask []string) (ServiceAccount, error) {
	project, id, err := parseServiceAccountName(name)
	if err != nil {
		return ServiceAccount{}, invalid("service_account.name", err.Error())
	}
	if err := checkMask(mask, ServiceAccountMask); err != nil {
		return ServiceAccount{}, err
	}
	now := s.clock()
	org := authn.OrganizationOf(project)
	a, err := s.store.UpdateServiceAccount(ctx, project, id, func(cur *ServiceAccount) error {
		next := *cur
		for _, f := range mask {
			switch f {
			case "display_name":
				next.DisplayName = in.DisplayName
			case "description":
				next.Description = in.Description
			}
		}
		if err := checkText("service_account", next.DisplayName, next.Description); err != nil {
			return err
		}
		if next != *cur {
			next.UpdateTime = now
			*cur = next
		}
		return nil
	}, allowedOn(call, org, name, now))
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("update %s: %w", name, err)
	}
	return a, nil
}

// DeleteServiceAccount deletes the service account called name and
// revokes every key it owns, in one transaction with its audit record, and
// returns how many keys it revoked. The id may be used again afterwards.
func (s *Service) DeleteServiceAccount(ctx context.Context, call Call, name string) (int, error) {
	project, id, err := parseServiceAccountName(name)
	if err != nil {
		return 0, invalid("name", err.Error())
	}
	now := s.clock()
	n, err := s.store.DeleteServiceAccount(ctx, project, id, now, allowedOn(call, authn.OrganizationOf(project), name, now))
	if err != nil {
		return 0, fmt.Errorf("delete %s: %w", name, err)
	}
	return n, nil
}

// CreateAgent adds an agent called id to project. Its owner and the user
// it acts for must be members of the organization (ErrAgentUserNotMember),
// checked in the transaction that stores it. The call is audited in that
// transaction.
func (s *Service) CreateAgent(ctx context.Context, call Call, project, id string, a Agent) (Agent, error) {
	org, err := ParseProject(project)
	if err != nil {
		return Agent{}, invalid("parent", err.Error())
	}
	if !idPattern.MatchString(id) {
		return Agent{}, invalid("agent_id", idRule)
	}
	if err := checkAgent(a); err != nil {
		return Agent{}, err
	}
	now := s.clock()
	a.Project, a.ID, a.CreateTime, a.UpdateTime = project, id, now, now
	if err := s.store.CreateAgent(ctx, a, allowedOn(call, org, a.Name(), now)); err != nil {
		return Agent{}, fmt.Errorf("create %s: %w", a.Name(), err)
	}
	return a, nil
}

// GetAgent returns the agent called name.
func (s *Service) GetAgent(ctx context.Context, name string) (Agent, error) {
	project, id, err := parseAgentName(name)
	if err != nil {
		return Agent{}, invalid("name", err.Error())
	}
	a, err := s.store.GetAgent(ctx, project, id)
	if err != nil {
		return Agent{}, fmt.Errorf("get %s: %w", name, err)
	}
	return a, nil
}

// ListAgents returns a page of project's agents in id order, and the token
// of the next page ("" on the last one).
func (s *Service) ListAgents(ctx context.Context, project string, pageSize int, pageToken string) ([]Agent, string, error) {
	if _, err := ParseProject(project); err != nil {
		return nil, "", invalid("parent", err.Error())
	}
	as, next, err := pageByID(project+"/agents", pageSize, pageToken, func(after string, limit int) ([]Agent, error) {
		return s.store.ListAgents(ctx, project, after, limit)
	}, func(a Agent) string { return a.ID })
	if err != nil {
		return nil, "", fmt.Errorf("list agents of %s: %w", project, err)
	}
	return as, next, nil
}

// UpdateAgent applies the fields of in that mask lists to the agent called
// name. A new owner or acts_for must be a member of the organization
// (ErrAgentUserNotMember). The call is audited in the transaction of the
// change.
func (s *Service) UpdateAgent(ctx context.Context, call Call, name string, in Agent, mask []string) (Agent, error) {
	project, id, err := parseAgentName(name)
	if err != nil {
		return Agent{}, invalid("agent.name", err.Error())
	}
	if err := checkMask(mask, AgentMask); err != nil {
		return Agent{}, err
	}
	now := s.clock()
	a, err := s.store.UpdateAgent(ctx, project, id, func(cur *Agent) error {
		next := *cur
		for _, f := range mask {
			switch f {
			case "display_name":
				next.DisplayName = in.DisplayName
			case "description":
				next.Description = in.Description
			case "owner":
				next.Owner = in.Owner
			case "risk_tier":
				next.RiskTier = in.RiskTier
			case "acts_for":
				next.ActsFor = in.ActsFor
			}
		}
		if err := checkAgent(next); err != nil {
			return err
		}
		if next != *cur {
			next.UpdateTime = now
			*cur = next
		}
		return nil
	}, allowedOn(call, authn.OrganizationOf(project), name, now))
	if err != nil {
		return Agent{}, fmt.Errorf("update %s: %w", name, err)
	}
	return a, nil
}

// DeleteAgent deletes the agent called name and revokes every key it
// owns, in one transaction with its audit record, and returns how many
// keys it revoked. The id may be used again afterwards.
func (s *Service) DeleteAgent(ctx context.Context, call Call, name string) (int, error) {
	project, id, err := parseAgentName(name)
	if err != nil {
		return 0, invalid("name", err.Error())
	}
	now := s.clock()
	n, err := s.store.DeleteAgent(ctx, project, id, now, allowedOn(call, authn.OrganizationOf(project), name, now))
	if err != nil {
		return 0, fmt.Errorf("delete %s: %w", name, err)
	}
	return n, nil
}
