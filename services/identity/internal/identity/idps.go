package identity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Provider is an organization's own IdP, brokered by Keycloak.
// Its OIDC client secret is not part of it: identity hands it to Keycloak
// and never stores or returns it.
type Provider struct {
	// Organization is orgs/{org}; ID the last segment of the name.
	Organization, ID string
	DisplayName      string
	// Exactly one of OIDC and SAML is set.
	OIDC *OIDCSettings `json:"oidc,omitempty"`
	SAML *SAMLSettings `json:"saml,omitempty"`
	// GroupRoles map provider groups to roles at first sign-in.
	GroupRoles []GroupRole
	// DefaultRole is the role of users in none of the groups; zero admits
	// no such user.
	DefaultRole OrgRole
	// EmailDomains are lowercase domains; a user's email must be in one.
	EmailDomains           []string
	CreateTime, UpdateTime time.Time
}

// OIDCSettings is how Keycloak reaches an OIDC provider.
type OIDCSettings struct {
	Issuer      string   `json:"issuer"`
	ClientID    string   `json:"client_id"`
	Scopes      []string `json:"scopes,omitempty"`
	GroupsClaim string   `json:"groups_claim,omitempty"`
}

// SAMLSettings is how Keycloak reaches a SAML provider.
type SAMLSettings struct {
	SSOURL             string `json:"sso_url"`
	EntityID           string `json:"entity_id"`
	SigningCertificate string `json:"signing_certificate,omitempty"`
	GroupsAttribute    string `json:"groups_attribute,omitempty"`
}

// GroupRole gives the members of a provider group a role.
type GroupRole struct {
	Group string  `json:"group"`
	Role  OrgRole `json:"role"`
}

// Name is the provider's resource name.
func (p Provider) Name() string { return p.Organization + "/identityProviders/" + p.ID }

// Alias is the provider's Keycloak alias: {org}.{idp}. Ids never contain a
// dot, so aliases of different providers never collide.
func (p Provider) Alias() string {
	return strings.TrimPrefix(p.Organization, "orgs/") + "." + p.ID
}

// RoleFor returns the role a user in groups gets: the highest mapped
// role, else the default role (zero: not admitted).
func (p Provider) RoleFor(groups []string) OrgRole {
	var role OrgRole
	for _, gr := range p.GroupRoles {
		if slices.Contains(groups, gr.Group) && gr.Role.higher(role) {
			role = gr.Role
		}
	}
	if role == 0 {
		return p.DefaultRole
	}
	return role
}

// Broker is Moat's Keycloak, which brokers sign-ins through organizations'
// providers.
type Broker interface {
	// PutIdentityProvider creates or updates p in Keycloak with its claim
	// mappers. An empty clientSecret keeps the secret Keycloak holds.
	PutIdentityProvider(ctx context.Context, p Provider, clientSecret string) error
	// DeleteIdentityProvider removes the provider with alias; a missing
	// one is not an error.
	DeleteIdentityProvider(ctx context.Context, alias string) error
	// BrokeredUser returns what Keycloak knows of a user who signed in
	// through a provider: their links and the groups the provider listed.
	BrokeredUser(ctx context.Context, userID string) (BrokeredUser, error)
	// RedirectURI is the URI to register at the provider with alias.
	RedirectURI(alias string) string
}

// BrokeredUser is a Keycloak user as brokering left them.
type BrokeredUser struct {
	Email         string
	EmailVerified bool
	// Aliases are the providers the user signed in through.
	Aliases []string
	// Groups are the groups the provider listed at the last sign-in.
	Groups []string
}

// Errors of identity providers.
var (
	// ErrIdPNotFound reports a provider that does not exist.
	ErrIdPNotFound = errors.New("identity provider not found")
	// ErrIdPExists reports a provider id taken in its organization.
	ErrIdPExists = errors.New("an identity provider with this id exists in the organization")
	// ErrDomainTaken reports an email domain another provider vouches for.
	ErrDomainTaken = errors.New("an email domain is claimed by another identity provider")
	// ErrNoBroker reports a deployment without Keycloak.
	ErrNoBroker = errors.New("identity providers need Keycloak, which this deployment does not run (set MOAT_KEYCLOAK_URL)")
	// ErrInvalidIdP wraps Keycloak's refusal of a provider's settings
	// (e.g. an issuer whose discovery document it cannot read); the text
	// is safe to show the admin who sent them.
	ErrInvalidIdP = errors.New("keycloak cannot use these identity provider settings")
	// ErrBroker wraps Keycloak's refusals and failures.
	ErrBroker = errors.New("keycloak refused or failed the change")
)

// domainPattern is the shape of an email domain: lowercase labels of
// letters, digits and hyphens, at least two.
var domainPattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Limits on identity provider settings.
const (
	maxDomains  = 50
	maxMappings = 100
	maxSetting  = 2048
	maxCert     = 16 << 10
)

// IdPMask lists the fields UpdateIdentityProvider may change.
var IdPMask = []string{"display_name", "oidc", "saml", "group_role_mappings", "default_role", "email_domains"}

// validateIdP checks p and normalises it (lowercase domains, defaults).
func validateIdP(p *Provider, secret string, creating bool) error {
	if !utf8.ValidString(p.DisplayName) || utf8.RuneCountInString(p.DisplayName) > maxDisplayName {
		return invalid("identity_provider.display_name", fmt.Sprintf("must be at most %d characters of UTF-8", maxDisplayName))
	}
	switch {
	case (p.OIDC == nil) == (p.SAML == nil):
		return invalid("identity_provider", "set exactly one of oidc and saml")
	case p.OIDC != nil:
		o := p.OIDC
		if err := checkURL(o.Issuer); err != nil {
			return invalid("identity_provider.oidc.issuer", err.Error())
		}
		if o.ClientID == "" || len(o.ClientID) > 255 || !printableASCII(o.ClientID) {
			return invalid("identity_provider.oidc.client_id", "must be 1 to 255 printable ASCII characters")
		}
		if creating && secret == "" {
			return invalid("identity_provider.oidc.client_secret", "is required")
		}
		if len(secret) > maxSetting || !printableASCII(secret) {
			return invalid("identity_provider.oidc.client_secret", "must be at most 2048 printable ASCII characters")
		}
		if len(o.Scopes) == 0 {
			o.Scopes = []string{"openid", "email", "profile"}
		}
		for i, sc := range o.Scopes {
			if sc == "" || len(sc) > 128 || !printableASCII(sc) || strings.Contains(sc, " ") {
				return invalid(fmt.Sprintf("identity_provider.oidc.scopes[%d]", i), "must be 1 to 128 printable ASCII characters without spaces")
			}
		}
		if !slices.Contains(o.Scopes, "openid") {
			return invalid("identity_provider.oidc.scopes", "must include openid")
		}
		if o.GroupsClaim == "" {
			o.GroupsClaim = "groups"
		}
		if len(o.GroupsClaim) > 128 || !printableASCII(o.GroupsClaim) {
			return invalid("identity_provider.oidc.groups_claim", "must be at most 128 printable ASCII characters")
		}
	default:
		sm := p.SAML
		if err := checkURL(sm.SSOURL); err != nil {
			return invalid("identity_provider.saml.sso_url", err.Error())
		}
		if sm.EntityID == "" || len(sm.EntityID) > maxSetting || !printableASCII(sm.EntityID) {
			return invalid("identity_provider.saml.entity_id", "must be 1 to 2048 printable ASCII characters")
		}
		// Without a certificate Keycloak would accept unsigned
		// assertions, which anyone can forge.
		if sm.SigningCertificate == "" || len(sm.SigningCertificate) > maxCert || !utf8.ValidString(sm.SigningCertificate) {
			return invalid("identity_provider.saml.signing_certificate", "is required: the provider's signing certificate, PEM or base64 DER, at most 16 KiB")
		}
		if sm.GroupsAttribute == "" {
			sm.GroupsAttribute = "groups"
		}
		if len(sm.GroupsAttribute) > 256 || !printableASCII(sm.GroupsAttribute) {
			return invalid("identity_provider.saml.groups_attribute", "must be at most 256 printable ASCII characters")
		}
	}
	if len(p.GroupRoles) > maxMappings {
		return invalid("identity_provider.group_role_mappings", fmt.Sprintf("must have at most %d entries", maxMappings))
	}
	for i, gr := range p.GroupRoles {
		if gr.Group == "" || len(gr.Group) > 256 || !utf8.ValidString(gr.Group) {
			return invalid(fmt.Sprintf("identity_provider.group_role_mappings[%d].group", i), "must be 1 to 256 bytes of UTF-8")
		}
		if gr.Role == 0 {
			return invalid(fmt.Sprintf("identity_provider.group_role_mappings[%d].role", i), "must be ORG_ROLE_ADMIN or ORG_ROLE_MEMBER")
		}
	}
	if len(p.EmailDomains) == 0 || len(p.EmailDomains) > maxDomains {
		return invalid("identity_provider.email_domains", fmt.Sprintf("must list 1 to %d domains", maxDomains))
	}
	seen := map[string]bool{}
	for i, d := range p.EmailDomains {
		d = strings.ToLower(d)
		if !domainPattern.MatchString(d) {
			return invalid(fmt.Sprintf("identity_provider.email_domains[%d]", i), "must be a domain name such as example.com")
		}
		if seen[d] {
			return invalid(fmt.Sprintf("identity_provider.email_domains[%d]", i), "duplicates an earlier domain")
		}
		seen[d] = true
		p.EmailDomains[i] = d
	}
	return nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(raw) > maxSetting || u.User != nil || u.Fragment != "" {
		return errors.New("must be an http or https URL without credentials or fragment, at most 2048 characters")
	}
	return nil
}

// parseIdPName splits orgs/{org}/identityProviders/{idp} by position.
func parseIdPName(name string) (org, id string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[2] != "identityProviders" || ParseOrg(parts[0]+"/"+parts[1]) != nil || !idPattern.MatchString(parts[3]) {
		return "", "", errors.New("must be orgs/{org}/identityProviders/{identity_provider}")
	}
	return parts[0] + "/" + parts[1], parts[3], nil
}

func (s *Service) broker() (Broker, error) {
	if s.Broker == nil {
		return nil, ErrNoBroker
	}
	return s.Broker, nil
}

// CreateIdentityProvider stores p under org with id and sets it up in
// Keycloak, in the transaction of its audit record: when Keycloak refuses,
// nothing is stored.
func (s *Service) CreateIdentityProvider(ctx context.Context, call Call, org, id string, p Provider, secret string) (Provider, error) {
	if err := ParseOrg(org); err != nil {
		return Provider{}, invalid("parent", err.Error())
	}
	if !idPattern.MatchString(id) {
		return Provider{}, invalid("identity_provider_id", "must be 3 to 63 characters of a-z, 0-9 and -, starting with a letter")
	}
	b, err := s.broker()
	if err != nil {
		return Provider{}, err
	}
	if err := validateIdP(&p, secret, true); err != nil {
		return Provider{}, err
	}
	release, err := s.brokerTurn(ctx)
	if err != nil {
		return Provider{}, err
	}
	defer release()
	now := s.clock()
	p.Organization, p.ID, p.CreateTime, p.UpdateTime = org, id, now, now
	err = s.store.CreateIdP(ctx, p, func(ctx context.Context) error {
		return callBroker(ctx, func(ctx context.Context) error { return b.PutIdentityProvider(ctx, p, secret) })
	}, allowedOn(call, org, p.Name(), now))
	if err != nil {
		return Provider{}, fmt.Errorf("create %s: %w", p.Name(), err)
	}
	return p, nil
}

// GetIdentityProvider returns the provider called name.
func (s *Service) GetIdentityProvider(ctx context.Context, name string) (Provider, error) {
	org, id, err := parseIdPName(name)
	if err != nil {
		return Provider{}, invalid("name", err.Error())
	}
	p, err := s.store.GetIdP(ctx, org, id)
	if err != nil {
		return Provider{}, fmt.Errorf("get %s: %w", name, err)
	}
	return p, nil
}

// ListIdentityProviders returns a page of org's providers, oldest first.
func (s *Service) ListIdentityProviders(ctx context.Context, org string, pageSize int, pageToken string) ([]Provider, string, error) {
	if err := ParseOrg(org); err != nil {
		return nil, "", invalid("parent", err.Error())
	}
	ps, next, err := pageByID(org+"/identityProviders", pageSize, pageToken, func(after string, limit int) ([]Provider, error) {
		return s.store.ListIdPs(ctx, org, after, limit)
	}, func(p Provider) string { return p.ID })
	if err != nil {
		return nil, "", fmt.Errorf("list identity providers of %s: %w", org, err)
	}
	return ps, next, nil
}

// UpdateIdentityProvider applies the masked fields of p (and a new client
// secret, when given) to the provider called name, in Keycloak and here.
func (s *Service) UpdateIdentityProvider(ctx context.Context, call Call, name string, p Provider, secret string, mask []string) (Provider, error) {
	org, id, err := parseIdPName(name)
	if err != nil {
		return Provider{}, invalid("identity_provider.name", err.Error())
	}
	if len(mask) == 0 {
		return Provider{}, invalid("update_mask", "must list the fields to change: "+strings.Join(IdPMask, ", "))
	}
	for _, f := range mask {
		if !slices.Contains(IdPMask, f) {
			return Provider{}, invalid("update_mask", fmt.Sprintf("%q cannot be changed; the fields are %s", f, strings.Join(IdPMask, ", ")))
		}
	}
	b, err := s.broker()
	if err != nil {
		return Provider{}, err
	}
	if !slices.Contains(mask, "oidc") {
		// A secret outside the masked fields changes nothing.
		secret = ""
	}
	release, err := s.brokerTurn(ctx)
	if err != nil {
		return Provider{}, err
	}
	defer release()
	now := s.clock()
	got, err := s.store.UpdateIdP(ctx, org, id, func(cur *Provider) error {
		for _, f := range mask {
			switch f {
			case "display_name":
				cur.DisplayName = p.DisplayName
			case "oidc":
				// Users' links belong to one protocol: switching would
				// orphan them, so it takes a new provider.
				if cur.OIDC == nil {
					return invalid("update_mask", "the provider speaks SAML; to move to OIDC, add a new provider and delete this one")
				}
				cur.OIDC = p.OIDC
			case "saml":
				if cur.SAML == nil {
					return invalid("update_mask", "the provider speaks OIDC; to move to SAML, add a new provider and delete this one")
				}
				cur.SAML = p.SAML
			case "group_role_mappings":
				cur.GroupRoles = p.GroupRoles
			case "default_role":
				cur.DefaultRole = p.DefaultRole
			case "email_domains":
				cur.EmailDomains = slices.Clone(p.EmailDomains)
			}
		}
		if err := validateIdP(cur, secret, false); err != nil {
			return err
		}
		cur.UpdateTime = now
		return nil
	}, func(ctx context.Context, p Provider) error {
		return callBroker(ctx, func(ctx context.Context) error { return b.PutIdentityProvider(ctx, p, secret) })
	}, allowedOn(call, org, name, now))
	if err != nil {
		return Provider{}, fmt.Errorf("update %s: %w", name, err)
	}
	return got, nil
}

// DeleteIdentityProvider removes the provider called name from Keycloak
// and here. Memberships it created stay.
func (s *Service) DeleteIdentityProvider(ctx context.Context, call Call, name string) (time.Time, error) {
	org, id, err := parseIdPName(name)
	if err != nil {
		return time.Time{}, invalid("name", err.Error())
	}
	b, err := s.broker()
	if err != nil {
		return time.Time{}, err
	}
	release, err := s.brokerTurn(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer release()
	now := s.clock()
	err = s.store.DeleteIdP(ctx, org, id, func(ctx context.Context, p Provider) error {
		return callBroker(ctx, func(ctx context.Context) error { return b.DeleteIdentityProvider(ctx, p.Alias()) })
	}, allowedOn(call, org, name, now))
	if err != nil {
		return time.Time{}, fmt.Errorf("delete %s: %w", name, err)
	}
	return now, nil
}

// brokerTimeout bounds each change an identity provider makes in Keycloak
// (which may fetch the provider's discovery document from a URL an org
// admin chose): the change runs inside a database transaction.
const brokerTimeout = 15 * time.Second

// brokerTurn waits for the one turn this replica gives identity provider
// changes at a time, so that slow Keycloak calls, each holding a database
// connection inside its transaction, can never take more than one of the
// pool's connections. The caller must call release.
func (s *Service) brokerTurn(ctx context.Context) (release func(), err error) {
	select {
	case s.brokerSlot <- struct{}{}:
		return func() { <-s.brokerSlot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// callBroker runs a Keycloak change within brokerTimeout and marks its
// errors: invalid settings stay ErrInvalidIdP, anything else becomes
// ErrBroker.
func callBroker(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	err := fn(ctx)
	if err == nil || errors.Is(err, ErrInvalidIdP) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrBroker, err)
}

// RedirectURI is the redirect URI of p's Keycloak broker endpoint, or ""
// without Keycloak.
func (s *Service) RedirectURI(p Provider) string {
	if s.Broker == nil {
		return ""
	}
	return s.Broker.RedirectURI(p.Alias())
}

// JoinResult says what Join did.
type JoinResult struct {
	// Joined lists the memberships Join created.
	Joined []Member
	// Refused says why a brokered user was not admitted, for the log.
	Refused string
}

// Join gives a user who signed in through organizations' providers the
// memberships those providers grant, just in time: for each provider the
// user is linked to, in an organization they are not a member of yet,
// when their email (verified) is in one of its domains and their groups
// map to a role. A membership an admin ended is not revived. Each
// membership is audited with call. Without Keycloak,
// or for a user Keycloak does not know, it does nothing.
//
// A user Join admitted nowhere is not looked up again for joinRecheck, so
// that a signed-in user without memberships cannot turn every call into a
// call to Keycloak's admin API.
func (s *Service) Join(ctx context.Context, call Call, userID string) (JoinResult, error) {
	var res JoinResult
	if s.Broker == nil || !userIDPattern.MatchString(userID) || s.joins.recent(userID, s.now()) {
		return res, nil
	}
	bctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	u, err := s.Broker.BrokeredUser(bctx, userID)
	cancel()
	if errors.Is(err, ErrUserNotFound) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("%w: read brokered user: %w", ErrBroker, err)
	}
	for _, alias := range u.Aliases {
		p, err := s.store.IdPByAlias(ctx, alias)
		if errors.Is(err, ErrIdPNotFound) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("look up identity provider %s: %w", alias, err)
		}
		_, domain, _ := strings.Cut(strings.ToLower(u.Email), "@")
		switch {
		case !u.EmailVerified || !slices.Contains(p.EmailDomains, domain):
			res.Refused = fmt.Sprintf("email domain %q is not vouched for by %s", domain, p.Name())
			continue
		case p.RoleFor(u.Groups) == 0:
			res.Refused = fmt.Sprintf("no group of the user maps to a role in %s, and it has no default role", p.Name())
			continue
		}
		now := s.clock()
		m := Member{Organization: p.Organization, UserID: userID, Role: p.RoleFor(u.Groups), Source: SourceJustInTime,
			IdentityProvider: p.Name(), Email: u.Email, CreateTime: now, UpdateTime: now}
		// Never revive: a member an admin removed stays removed, however
		// often they sign in.
		got, err := s.store.CreateMember(ctx, m, false, func(m Member) AuditRecord { return allowedOn(call, m.Organization, m.Name(), now) })
		if errors.Is(err, ErrMemberExists) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("join %s: %w", p.Organization, err)
		}
		res.Joined = append(res.Joined, got)
	}
	if len(res.Joined) == 0 {
		s.joins.note(userID, s.now())
	}
	return res, nil
}

// joinRecheck is how long Join leaves a user it admitted nowhere alone.
const joinRecheck = 10 * time.Second

// maxJoinMisses bounds joinMisses: past it, the oldest notes are dropped
// wholesale, which at worst costs a few extra look-ups.
const maxJoinMisses = 10000

// joinMisses remembers when Join last admitted a user nowhere.
type joinMisses struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (j *joinMisses) recent(user string, now time.Time) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	at, ok := j.seen[user]
	return ok && now.Sub(at) < joinRecheck
}

func (j *joinMisses) note(user string, now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.seen == nil || len(j.seen) >= maxJoinMisses {
		j.seen = make(map[string]time.Time)
	}
	j.seen[user] = now
}

// ErrUserNotFound reports a user Keycloak does not know.
var ErrUserNotFound = errors.New("user not found in keycloak")
