package config

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/moat-ai/moat/libs/pagetoken"
)

// Store persists the configuration. It is safe for concurrent use.
//
// Every method that changes state does so in one transaction that also
// gives the changed row a new version (from one counter shared by every
// resource), writes the audit record a, and wakes the watchers; a deletion
// leaves a tombstone carrying its version, so that watchers learn of it.
// A create whose requestID was already used returns the resource that
// request created (AIP-155) and changes nothing but the audit log.
//
// Reads never return deleted resources. A missing resource is an error
// wrapping ErrNotFound; a taken name or route model wraps ErrAlreadyExists
// (the name of a deleted organization or project stays taken: Retired);
// a deletion refused because of live children wraps ErrInUse; a route whose
// provider does not exist is a *ValidationError on field "route.provider".
type Store interface {
	CreateOrganization(ctx context.Context, o Organization, requestID string, a AuditRecord) (Organization, error)
	Organization(ctx context.Context, name string) (Organization, error)
	Organizations(ctx context.Context, p Page) ([]Organization, string, error)
	UpdateOrganization(ctx context.Context, name string, update func(*Organization) error, a AuditRecord) (Organization, error)
	DeleteOrganization(ctx context.Context, name string, a AuditRecord) error

	CreateProject(ctx context.Context, p Project, requestID string, a AuditRecord) (Project, error)
	Project(ctx context.Context, name string) (Project, error)
	Projects(ctx context.Context, org string, p Page) ([]Project, string, error)
	UpdateProject(ctx context.Context, name string, update func(*Project) error, a AuditRecord) (Project, error)
	DeleteProject(ctx context.Context, name string, a AuditRecord) error

	CreateProvider(ctx context.Context, p Provider, requestID string, a AuditRecord) (Provider, error)
	Provider(ctx context.Context, name string) (Provider, error)
	Providers(ctx context.Context, org string, p Page) ([]Provider, string, error)
	UpdateProvider(ctx context.Context, name string, update func(*Provider) error, a AuditRecord) (Provider, error)
	DeleteProvider(ctx context.Context, name string, a AuditRecord) error

	CreateRoute(ctx context.Context, r Route, requestID string, a AuditRecord) (Route, error)
	Route(ctx context.Context, name string) (Route, error)
	Routes(ctx context.Context, project string, p Page) ([]Route, string, error)
	UpdateRoute(ctx context.Context, name string, update func(*Route) error, a AuditRecord) (Route, error)
	DeleteRoute(ctx context.Context, name string, a AuditRecord) error

	// RecordAudit writes a in a transaction of its own: the audit of an
	// action that changed nothing because it was refused or failed.
	RecordAudit(ctx context.Context, a AuditRecord) error
	// Snapshot returns every live resource at one consistent version.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Changes returns up to limit changes with a version above after, in
	// version order. A resource changed several times appears once, in its
	// latest state. Every change up to the last one returned is included,
	// so the caller continues from the last version it got.
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)
}

// Sealer seals provider credentials under the current key-encryption key.
// aad binds the sealed value to its provider: it is the provider's name.
type Sealer interface {
	Seal(plaintext, aad []byte) (Sealed, error)
}

// Page selects a page of a list: at most Size items after the item whose
// store cursor is After ("" for the first page). Lists are in creation
// order. Cursors are the rows' UUIDv7 keys, which sort by creation.
type Page struct {
	Size  int
	After string
}

// Page sizes of every list (AIP-158).
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Service applies the configuration rules and hands valid changes to the
// store. It is safe for concurrent use.
type Service struct {
	store  Store
	sealer Sealer
}

// NewService returns a Service over store that seals credentials with sealer.
func NewService(store Store, sealer Sealer) *Service {
	return &Service{store: store, sealer: sealer}
}

// RecordAudit writes the audit record of an action that changed nothing.
func (s *Service) RecordAudit(ctx context.Context, a AuditRecord) error {
	return s.store.RecordAudit(ctx, a)
}

// Snapshot returns the whole live configuration at one version.
func (s *Service) Snapshot(ctx context.Context) (Snapshot, error) { return s.store.Snapshot(ctx) }

// Changes returns up to limit changes after version after; see Store.
func (s *Service) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	return s.store.Changes(ctx, after, limit)
}

// --- organizations

// CreateOrganization creates orgs/{id}. a is the audit record of the call;
// its target becomes the new organization.
func (s *Service) CreateOrganization(ctx context.Context, a AuditRecord, id string, o Organization, requestID string) (Organization, error) {
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return Organization{}, err
	}
	if err := checkID("organization_id", id); err != nil {
		return Organization{}, err
	}
	if err := checkDisplayName("organization.display_name", o.DisplayName); err != nil {
		return Organization{}, err
	}
	o = Organization{Name: OrganizationName(id), DisplayName: o.DisplayName}
	return s.store.CreateOrganization(ctx, o, requestID, a.WithTarget(o.Name))
}

// Organization returns the organization called name.
func (s *Service) Organization(ctx context.Context, name string) (Organization, error) {
	if _, ok := ParseOrganizationName(name); !ok {
		return Organization{}, invalid("name", "must be orgs/{org}")
	}
	return s.store.Organization(ctx, name)
}

// ListOrganizations returns a page of organizations and the token of the
// next page ("" after the last).
func (s *Service) ListOrganizations(ctx context.Context, pageSize int32, pageToken string) ([]Organization, string, error) {
	const scope = "orgs"
	p, err := parsePage(scope, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	items, next, err := s.store.Organizations(ctx, p)
	return items, nextPageToken(scope, next), err
}

// UpdateOrganization changes the fields of o.Name named by paths.
func (s *Service) UpdateOrganization(ctx context.Context, a AuditRecord, o Organization, paths []string) (Organization, error) {
	if _, ok := ParseOrganizationName(o.Name); !ok {
		return Organization{}, invalid("organization.name", "must be orgs/{org}")
	}
	set, err := organizationMask.check("update_mask", paths)
	if err != nil {
		return Organization{}, err
	}
	if set["display_name"] {
		if err := checkDisplayName("organization.display_name", o.DisplayName); err != nil {
			return Organization{}, err
		}
	}
	return s.store.UpdateOrganization(ctx, o.Name, func(cur *Organization) error {
		if set["display_name"] {
			cur.DisplayName = o.DisplayName
		}
		return nil
	}, a)
}

// DeleteOrganization deletes an organization that has no live projects or
// providers.
func (s *Service) DeleteOrganization(ctx context.Context, a AuditRecord, name string) error {
	if _, ok := ParseOrganizationName(name); !ok {
		return invalid("name", "must be orgs/{org}")
	}
	return s.store.DeleteOrganization(ctx, name, a)
}

// --- projects

// CreateProject creates {parent}/projects/{id}.
func (s *Service) CreateProject(ctx context.Context, a AuditRecord, parent, id string, p Project, requestID string) (Project, error) {
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return Project{}, err
	}
	org, ok := ParseOrganizationName(parent)
	if !ok {
		return Project{}, invalid("parent", "must be orgs/{org}")
	}
	if err := checkID("project_id", id); err != nil {
		return Project{}, err
	}
	if err := checkDisplayName("project.display_name", p.DisplayName); err != nil {
		return Project{}, err
	}
	p = Project{Name: ProjectName(org, id), DisplayName: p.DisplayName}
	return s.store.CreateProject(ctx, p, requestID, a.WithTarget(p.Name))
}

// Project returns the project called name.
func (s *Service) Project(ctx context.Context, name string) (Project, error) {
	if _, _, ok := ParseProjectName(name); !ok {
		return Project{}, invalid("name", "must be orgs/{org}/projects/{project}")
	}
	return s.store.Project(ctx, name)
}

// ListProjects returns a page of parent's projects and the next page token.
func (s *Service) ListProjects(ctx context.Context, parent string, pageSize int32, pageToken string) ([]Project, string, error) {
	if _, ok := ParseOrganizationName(parent); !ok {
		return nil, "", invalid("parent", "must be orgs/{org}")
	}
	p, err := parsePage(parent, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	items, next, err := s.store.Projects(ctx, parent, p)
	return items, nextPageToken(parent, next), err
}

// UpdateProject changes the fields of p.Name named by paths.
func (s *Service) UpdateProject(ctx context.Context, a AuditRecord, p Project, paths []string) (Project, error) {
	if _, _, ok := ParseProjectName(p.Name); !ok {
		return Project{}, invalid("project.name", "must be orgs/{org}/projects/{project}")
	}
	set, err := projectMask.check("update_mask", paths)
	if err != nil {
		return Project{}, err
	}
	if set["display_name"] {
		if err := checkDisplayName("project.display_name", p.DisplayName); err != nil {
			return Project{}, err
		}
	}
	return s.store.UpdateProject(ctx, p.Name, func(cur *Project) error {
		if set["display_name"] {
			cur.DisplayName = p.DisplayName
		}
		return nil
	}, a)
}

// DeleteProject deletes a project that has no live routes.
func (s *Service) DeleteProject(ctx context.Context, a AuditRecord, name string) error {
	if _, _, ok := ParseProjectName(name); !ok {
		return invalid("name", "must be orgs/{org}/projects/{project}")
	}
	return s.store.DeleteProject(ctx, name, a)
}

// --- providers

// CreateProvider creates {parent}/providers/{id}, sealing credential (when
// not empty) to the new provider's name.
func (s *Service) CreateProvider(ctx context.Context, a AuditRecord, parent, id string, p Provider, credential, requestID string) (Provider, error) {
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return Provider{}, err
	}
	org, ok := ParseOrganizationName(parent)
	if !ok {
		return Provider{}, invalid("parent", "must be orgs/{org}")
	}
	if err := checkID("provider_id", id); err != nil {
		return Provider{}, err
	}
	if err := checkProviderFields(p, nil); err != nil {
		return Provider{}, err
	}
	p = Provider{
		Name:        ProviderName(org, id),
		DisplayName: p.DisplayName,
		Type:        p.Type,
		BaseURL:     normalizeBaseURL(p.BaseURL),
		Azure:       p.Azure,
		Vertex:      p.Vertex,
		Bedrock:     p.Bedrock,
	}
	if err := checkProvider(p); err != nil {
		return Provider{}, err
	}
	if err := checkCredential("provider.credential", p.Type, credential); err != nil {
		return Provider{}, err
	}
	if credential != "" {
		if p.Credential, err = s.seal(p.Name, credential); err != nil {
			return Provider{}, err
		}
	}
	return s.store.CreateProvider(ctx, p, requestID, a.WithTarget(p.Name))
}

// Provider returns the provider called name.
func (s *Service) Provider(ctx context.Context, name string) (Provider, error) {
	if _, _, ok := ParseProviderName(name); !ok {
		return Provider{}, invalid("name", "must be orgs/{org}/providers/{provider}")
	}
	return s.store.Provider(ctx, name)
}

// ListProviders returns a page of parent's providers and the next page token.
func (s *Service) ListProviders(ctx context.Context, parent string, pageSize int32, pageToken string) ([]Provider, string, error) {
	if _, ok := ParseOrganizationName(parent); !ok {
		return nil, "", invalid("parent", "must be orgs/{org}")
	}
	p, err := parsePage(parent+"/providers", pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	items, next, err := s.store.Providers(ctx, parent, p)
	return items, nextPageToken(parent+"/providers", next), err
}

// UpdateProvider changes the fields of p.Name named by paths. Naming
// "credential" with an empty credential removes the stored one.
//
// The rules that tie fields to the type are checked on the provider as
// the update leaves it, so a mask naming only type (or only base_url)
// cannot produce a provider its type refuses. A type change that needs
// another kind of credential (an API key to a service-account key, say)
// must name credential too: config cannot re-check a sealed credential.
func (s *Service) UpdateProvider(ctx context.Context, a AuditRecord, p Provider, credential string, paths []string) (Provider, error) {
	if _, _, ok := ParseProviderName(p.Name); !ok {
		return Provider{}, invalid("provider.name", "must be orgs/{org}/providers/{provider}")
	}
	set, err := providerMask.check("update_mask", paths)
	if err != nil {
		return Provider{}, err
	}
	if err := checkProviderFields(p, set); err != nil {
		return Provider{}, err
	}
	return s.store.UpdateProvider(ctx, p.Name, func(cur *Provider) error {
		oldType, hadCredential := cur.Type, cur.Credential != nil
		if set["display_name"] {
			cur.DisplayName = p.DisplayName
		}
		if set["type"] {
			cur.Type = p.Type
		}
		if set["base_url"] {
			cur.BaseURL = normalizeBaseURL(p.BaseURL)
		}
		applySettings(cur, p, set)
		if err := checkProvider(*cur); err != nil {
			return err
		}
		switch {
		case set["credential"]:
			if err := checkCredential("provider.credential", cur.Type, credential); err != nil {
				return err
			}
			cur.Credential = nil
			if credential != "" {
				sealed, err := s.seal(p.Name, credential)
				if err != nil {
					return err
				}
				cur.Credential = sealed
			}
		case !hadCredential:
			// No credential is also a credential some types refuse.
			if err := checkCredential("provider.credential", cur.Type, ""); err != nil {
				return err
			}
		case providerTypes[cur.Type].credential != providerTypes[oldType].credential:
			return invalid("provider.credential", "must be set again, naming credential in update_mask: %s and %s take different credentials",
				providerTypes[oldType].api, providerTypes[cur.Type].api)
		}
		return nil
	}, a)
}

// applySettings copies the settings paths of set from p to cur. A whole
// message path replaces the message, clearing it when p has none; a field
// path creates the message if needed and sets that field alone.
func applySettings(cur *Provider, p Provider, set map[string]bool) {
	if set["azure"] {
		cur.Azure = clone(p.Azure)
	}
	if set["azure.api_version"] {
		az := deref(cur.Azure)
		az.APIVersion = deref(p.Azure).APIVersion
		cur.Azure = &az
	}
	if set["vertex"] {
		cur.Vertex = clone(p.Vertex)
	}
	if set["vertex.project"] || set["vertex.location"] {
		v, in := deref(cur.Vertex), deref(p.Vertex)
		if set["vertex.project"] {
			v.Project = in.Project
		}
		if set["vertex.location"] {
			v.Location = in.Location
		}
		cur.Vertex = &v
	}
	if set["bedrock"] {
		cur.Bedrock = clone(p.Bedrock)
	}
	if set["bedrock.region"] {
		b := deref(cur.Bedrock)
		b.Region = deref(p.Bedrock).Region
		cur.Bedrock = &b
	}
}

// clone returns a copy of *v, or nil.
func clone[T any](v *T) *T {
	if v == nil {
		return nil
	}
	c := *v
	return &c
}

// deref returns *v, or the zero T for nil.
func deref[T any](v *T) T {
	if v == nil {
		var zero T
		return zero
	}
	return *v
}

// DeleteProvider deletes a provider that no live route uses. Its sealed
// credential is erased; the tombstone keeps only the name.
func (s *Service) DeleteProvider(ctx context.Context, a AuditRecord, name string) error {
	if _, _, ok := ParseProviderName(name); !ok {
		return invalid("name", "must be orgs/{org}/providers/{provider}")
	}
	return s.store.DeleteProvider(ctx, name, a)
}

// checkProviderFields validates, one by one, the fields of p in set (every
// field when set is nil, as on create). The credential and the rules that
// depend on the type are checked on the resulting provider (checkProvider,
// checkCredential).
func checkProviderFields(p Provider, set map[string]bool) error {
	in := func(f string) bool { return set == nil || set[f] }
	if in("display_name") {
		if err := checkDisplayName("provider.display_name", p.DisplayName); err != nil {
			return err
		}
	}
	if in("type") {
		if err := checkProviderType("provider.type", p.Type); err != nil {
			return err
		}
	}
	// An empty base URL means the type's default; checkProvider refuses it
	// for the types that have none.
	if in("base_url") && p.BaseURL != "" {
		if err := checkBaseURL("provider.base_url", p.BaseURL); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) seal(provider, credential string) (*Sealed, error) {
	sealed, err := s.sealer.Seal([]byte(credential), []byte(provider))
	if err != nil {
		return nil, fmt.Errorf("seal credential of %s: %w", provider, err)
	}
	return &sealed, nil
}

// --- routes

// CreateRoute creates {parent}/routes/{id}.
func (s *Service) CreateRoute(ctx context.Context, a AuditRecord, parent, id string, r Route, requestID string) (Route, error) {
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return Route{}, err
	}
	org, project, ok := ParseProjectName(parent)
	if !ok {
		return Route{}, invalid("parent", "must be orgs/{org}/projects/{project}")
	}
	if err := checkID("route_id", id); err != nil {
		return Route{}, err
	}
	if err := checkRouteFields(org, r, nil); err != nil {
		return Route{}, err
	}
	r = Route{Name: RouteName(org, project, id), Model: r.Model, Provider: r.Provider, UpstreamModel: r.UpstreamModel}
	return s.store.CreateRoute(ctx, r, requestID, a.WithTarget(r.Name))
}

// Route returns the route called name.
func (s *Service) Route(ctx context.Context, name string) (Route, error) {
	if _, _, _, ok := ParseRouteName(name); !ok {
		return Route{}, invalid("name", "must be orgs/{org}/projects/{project}/routes/{route}")
	}
	return s.store.Route(ctx, name)
}

// ListRoutes returns a page of parent's routes and the next page token.
func (s *Service) ListRoutes(ctx context.Context, parent string, pageSize int32, pageToken string) ([]Route, string, error) {
	if _, _, ok := ParseProjectName(parent); !ok {
		return nil, "", invalid("parent", "must be orgs/{org}/projects/{project}")
	}
	p, err := parsePage(parent, pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	items, next, err := s.store.Routes(ctx, parent, p)
	return items, nextPageToken(parent, next), err
}

// UpdateRoute changes the fields of r.Name named by paths.
func (s *Service) UpdateRoute(ctx context.Context, a AuditRecord, r Route, paths []string) (Route, error) {
	org, _, _, ok := ParseRouteName(r.Name)
	if !ok {
		return Route{}, invalid("route.name", "must be orgs/{org}/projects/{project}/routes/{route}")
	}
	set, err := routeMask.check("update_mask", paths)
	if err != nil {
		return Route{}, err
	}
	if err := checkRouteFields(org, r, set); err != nil {
		return Route{}, err
	}
	return s.store.UpdateRoute(ctx, r.Name, func(cur *Route) error {
		if set["model"] {
			cur.Model = r.Model
		}
		if set["provider"] {
			cur.Provider = r.Provider
		}
		if set["upstream_model"] {
			cur.UpstreamModel = r.UpstreamModel
		}
		return nil
	}, a)
}

// DeleteRoute deletes a route.
func (s *Service) DeleteRoute(ctx context.Context, a AuditRecord, name string) error {
	if _, _, _, ok := ParseRouteName(name); !ok {
		return invalid("name", "must be orgs/{org}/projects/{project}/routes/{route}")
	}
	return s.store.DeleteRoute(ctx, name, a)
}

func checkRouteFields(org string, r Route, set map[string]bool) error {
	in := func(f string) bool { return set == nil || set[f] }
	if in("model") {
		if err := checkModel("route.model", r.Model, maxModel); err != nil {
			return err
		}
	}
	if in("provider") {
		porg, _, ok := ParseProviderName(r.Provider)
		if !ok {
			return invalid("route.provider", "must be orgs/{org}/providers/{provider}")
		}
		if porg != org {
			return invalid("route.provider", "must be a provider of %s", OrganizationName(org))
		}
	}
	if in("upstream_model") {
		if err := checkModel("route.upstream_model", r.UpstreamModel, maxUpstreamModel); err != nil {
			return err
		}
	}
	return nil
}

// --- requests and pages

// checkRequestID accepts an empty request id or a UUID (AIP-155), returned
// in canonical form so that retries match however the client spelled it.
func checkRequestID(id string) (string, error) {
	if id == "" {
		return "", nil
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", invalid("request_id", "must be a UUID")
	}
	return u.String(), nil
}

// parsePage validates a page request. Tokens are opaque to clients; inside
// they name the list they belong to, so that a token of another list is
// refused rather than silently misapplied.
func parsePage(scope string, size int32, token string) (Page, error) {
	p := Page{Size: int(size)}
	switch {
	case size < 0:
		return Page{}, invalid("page_size", "must not be negative")
	case size == 0:
		p.Size = DefaultPageSize
	case size > MaxPageSize:
		p.Size = MaxPageSize
	}
	if token == "" {
		return p, nil
	}
	var after string
	if err := pagetoken.Decode(token, scope, &after); err != nil {
		return Page{}, invalid("page_token", "is not a token this list issued")
	}
	if _, err := uuid.Parse(after); err != nil {
		return Page{}, invalid("page_token", "is not a token this list issued")
	}
	p.After = after
	return p, nil
}

// nextPageToken returns the token of the page after cursor, "" when the list
// has no more items.
func nextPageToken(scope, cursor string) string {
	if cursor == "" {
		return ""
	}
	return pagetoken.Encode(scope, cursor)
}
