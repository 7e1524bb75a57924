// Package snapshot holds the configuration the gateway serves from: an
// immutable in-memory Snapshot of organizations, projects, providers (with
// their credentials opened) and routes, rebuilt from config's WatchConfig
// stream and swapped in atomically, so that no request ever waits on config
// or on a lock. When config is unreachable the last good snapshot stays in
// force, and the metrics say how old it is.
package snapshot

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/gateway/internal/credential"
	"github.com/moat-ai/moat/services/gateway/internal/provider"
)

// Route is a logical model of a project, resolved to its provider.
type Route struct {
	// Name is orgs/{org}/projects/{project}/routes/{route}.
	Name string
	// Organization is orgs/{org}; Project is orgs/{org}/projects/{project}.
	Organization, Project string
	// Model is the name clients send.
	Model string
	// UpstreamModel is the name the provider knows, and UpstreamModelJSON
	// the same as a JSON string, ready to splice into a request body.
	UpstreamModel     string
	UpstreamModelJSON []byte
	// Created is when the route was created (Unix seconds), for /v1/models.
	Created int64
	// Provider is where requests go.
	Provider *provider.Provider
}

type routeKey struct{ project, model string }

// Snapshot is one immutable configuration. Its methods are safe for
// concurrent use; nothing in it is ever modified after it is published.
type Snapshot struct {
	version   int64
	orgs      map[string]struct{}
	projects  map[string]struct{}
	providers map[string]*provider.Provider
	routes    map[string]*configv1.Route
	byModel   map[routeKey]*Route
	byProject map[string][]*Route // sorted by model
}

func emptySnapshot() *Snapshot {
	return &Snapshot{
		orgs:      map[string]struct{}{},
		projects:  map[string]struct{}{},
		providers: map[string]*provider.Provider{},
		routes:    map[string]*configv1.Route{},
		byModel:   map[routeKey]*Route{},
		byProject: map[string][]*Route{},
	}
}

// Version is the configuration version the snapshot holds.
func (s *Snapshot) Version() int64 { return s.version }

// Route returns the route of project for the logical model name.
func (s *Snapshot) Route(project, model string) (*Route, bool) {
	r, ok := s.byModel[routeKey{project, model}]
	return r, ok
}

// Provider returns the provider named name (orgs/{org}/providers/{p}).
func (s *Snapshot) Provider(name string) (*provider.Provider, bool) {
	p, ok := s.providers[name]
	return p, ok
}

// ModelOf returns the upstream model of the first route (by route name)
// that uses provider name, empty when none does.
func (s *Snapshot) ModelOf(name string) string {
	first, model := "", ""
	for rn, r := range s.routes {
		if r.GetProvider() == name && (first == "" || rn < first) {
			first, model = rn, r.GetUpstreamModel()
		}
	}
	return model
}

// Routes returns the routes of project, sorted by model. The slice is
// shared: callers must not modify it.
func (s *Snapshot) Routes(project string) []*Route { return s.byProject[project] }

// Counts reports how many resources of each kind the snapshot holds.
func (s *Snapshot) Counts() (orgs, projects, providers, routes int) {
	return len(s.orgs), len(s.projects), len(s.providers), len(s.byModel)
}

// clone copies the resource maps, so that a change can be applied to the
// copy while readers keep the original.
func (s *Snapshot) clone(version int64) *Snapshot {
	c := emptySnapshot()
	c.version = version
	for k := range s.orgs {
		c.orgs[k] = struct{}{}
	}
	for k := range s.projects {
		c.projects[k] = struct{}{}
	}
	for k, v := range s.providers {
		c.providers[k] = v
	}
	for k, v := range s.routes {
		c.routes[k] = v
	}
	return c
}

// index resolves every route to its provider. A route whose project or
// provider is missing, or whose provider lies in another organization, is
// left out (config never sends one; this guards tenant isolation anyway).
func (s *Snapshot) index(log *slog.Logger) {
	s.byModel = make(map[routeKey]*Route, len(s.routes))
	s.byProject = map[string][]*Route{}
	for name, r := range s.routes {
		project, ok := parentOf(name, "/routes/")
		if !ok {
			log.Warn("route name malformed; ignored", "route", name)
			continue
		}
		org, _ := parentOf(project, "/projects/")
		if _, ok := s.projects[project]; !ok {
			continue
		}
		p, ok := s.providers[r.GetProvider()]
		if !ok || !strings.HasPrefix(r.GetProvider(), org+"/providers/") {
			log.Warn("route names a provider outside the snapshot or its organization; ignored", "route", name, "provider", r.GetProvider())
			continue
		}
		route := &Route{
			Name:              name,
			Organization:      org,
			Project:           project,
			Model:             r.GetModel(),
			UpstreamModel:     r.GetUpstreamModel(),
			UpstreamModelJSON: strconv.AppendQuote(nil, r.GetUpstreamModel()),
			Created:           r.GetCreateTime().GetSeconds(),
			Provider:          p,
		}
		// strconv quoting is valid JSON only for ASCII without control
		// characters, which config enforces for model names; anything
		// else is refused here rather than sent malformed.
		if !printableASCII(route.UpstreamModel) {
			log.Warn("route's upstream model is not printable ASCII; ignored", "route", name)
			continue
		}
		k := routeKey{project, route.Model}
		if prev, dup := s.byModel[k]; dup && prev.Name < name {
			continue // config keeps models unique; be deterministic if not
		}
		s.byModel[k] = route
	}
	for k, r := range s.byModel {
		s.byProject[k.project] = append(s.byProject[k.project], r)
	}
	for _, rs := range s.byProject {
		slices.SortFunc(rs, func(a, b *Route) int { return cmp.Compare(a.Model, b.Model) })
	}
}

func printableASCII(s string) bool {
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

// parentOf returns the part of name before sep followed by one segment:
// parentOf("orgs/a/projects/b/routes/c", "/routes/") = "orgs/a/projects/b".
func parentOf(name, sep string) (string, bool) {
	i := strings.LastIndex(name, sep)
	if i <= 0 || strings.Contains(name[i+len(sep):], "/") {
		return "", false
	}
	return name[:i], true
}

// Store holds the current Snapshot. Reads are one atomic load; writers
// (the follower) copy, apply and swap.
type Store struct {
	keyring *secretbox.Keyring
	log     *slog.Logger
	// creds keeps the credentials that refresh in the background
	// (Vertex, Bedrock, Azure with Entra ID); nil when none may be built
	// (tests).
	creds *credential.Keeper
	cur   atomic.Pointer[Snapshot]
	ready atomic.Bool
	mu    sync.Mutex // serialises writers

	// Fresh tracks whether the snapshot is known to be current.
	Fresh Freshness
}

// NewStore returns an empty store that opens provider credentials with
// keyring. It is not Ready until the first snapshot.
func NewStore(keyring *secretbox.Keyring, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{keyring: keyring, log: log}
	s.cur.Store(emptySnapshot())
	return s
}

// WithCredentials makes the store build Vertex AI and Bedrock providers,
// and Azure OpenAI ones with Entra ID client credentials, whose
// credentials k keeps refreshed. Call it before the first snapshot.
func (s *Store) WithCredentials(k *credential.Keeper) *Store {
	s.creds = k
	return s
}

// Load returns the current snapshot; never nil.
func (s *Store) Load() *Snapshot { return s.cur.Load() }

// Ready reports whether a first snapshot has arrived.
func (s *Store) Ready() bool { return s.ready.Load() }

// Replace swaps in a whole configuration.
func (s *Store) Replace(version int64, resources []*configv1.ConfigResource) {
	next := emptySnapshot()
	next.version = version
	for _, r := range resources {
		s.put(next, r)
	}
	next.index(s.log)
	s.mu.Lock()
	s.cur.Store(next)
	s.retain(next)
	s.mu.Unlock()
	s.ready.Store(true)
	s.log.Info("configuration snapshot loaded", "version", version, "resources", len(resources), "routes", len(next.byModel))
}

// Upsert adds or changes one resource. Changes not newer than the current
// snapshot are ignored.
func (s *Store) Upsert(version int64, r *configv1.ConfigResource) {
	s.update(version, func(next *Snapshot) { s.put(next, r) })
}

// Delete removes the resource with name. Changes not newer than the
// current snapshot are ignored.
func (s *Store) Delete(version int64, name string) {
	s.update(version, func(next *Snapshot) {
		delete(next.orgs, name)
		delete(next.projects, name)
		delete(next.providers, name)
		delete(next.routes, name)
	})
}

func (s *Store) update(version int64, apply func(*Snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	if version <= old.version {
		return
	}
	next := old.clone(version)
	apply(next)
	next.index(s.log)
	s.cur.Store(next)
	s.retain(next)
}

// retain lets the credential keeper stop the refreshers of providers the
// snapshot no longer holds.
func (s *Store) retain(next *Snapshot) {
	if s.creds == nil {
		return
	}
	names := make(map[string]bool, len(next.providers))
	for name := range next.providers {
		names[name] = true
	}
	s.creds.Retain(names)
}

func (s *Store) put(next *Snapshot, r *configv1.ConfigResource) {
	switch {
	case r.GetOrganization() != nil:
		next.orgs[r.GetOrganization().GetName()] = struct{}{}
	case r.GetProject() != nil:
		next.projects[r.GetProject().GetName()] = struct{}{}
	case r.GetProvider() != nil:
		p := s.provider(r.GetProvider())
		next.providers[p.Name] = p
	case r.GetRoute() != nil:
		next.routes[r.GetRoute().GetName()] = r.GetRoute()
	}
}

// provider builds a Provider, opening its credential. A provider that
// cannot be used is kept, marked Unusable, so that its routes answer with
// a clear upstream error instead of vanishing.
func (s *Store) provider(gp *configv1.GatewayProvider) *provider.Provider {
	pp := gp.GetProvider()
	c := provider.Config{Name: pp.GetName(), Kind: kindOf(pp.GetType()), BaseURL: pp.GetBaseUrl(), AzureAPIVersion: pp.GetAzure().GetApiVersion(),
		VertexProject: pp.GetVertex().GetProject(), VertexLocation: pp.GetVertex().GetLocation(), BedrockRegion: pp.GetBedrock().GetRegion()}
	var p *provider.Provider
	if sealed := gp.GetCredential(); sealed != nil && len(sealed.GetCiphertext()) > 0 {
		pt, err := s.keyring.Open(secretbox.Sealed{KEKID: sealed.GetKekId(), WrappedKey: sealed.GetWrappedKey(), Ciphertext: sealed.GetCiphertext()}, []byte(c.Name))
		if err != nil {
			p = provider.Unusable(c.Name, c.Kind, "credential does not open with the gateway's key-encryption keys")
		}
		c.Credential = pt
	}
	if p == nil {
		p = s.withCredentials(&c)
	}
	if p == nil {
		p = provider.New(c)
	}
	if p.Unusable != "" {
		s.log.Error("provider unusable; its routes answer 502", "provider", p.Name, "reason", p.Unusable, "kek_id", gp.GetCredential().GetKekId())
	}
	return p
}

// withCredentials builds the background-refreshed credential of a Vertex
// AI or Bedrock provider, or of an Azure OpenAI provider with Entra ID
// client credentials, into c, or returns the provider as unusable when
// it cannot be had. Building one does no I/O for Vertex and Azure (tokens
// come from the refresher) and, for Bedrock, at most one credential
// lookup, at snapshot time, never on a request.
func (s *Store) withCredentials(c *provider.Config) *provider.Provider {
	switch c.Kind {
	case provider.VertexAI, provider.Bedrock:
	case provider.AzureOpenAI:
		if !provider.IsEntraCredential(c.Credential) {
			return nil // an API key
		}
	default:
		return nil
	}
	if s.creds == nil {
		return provider.Unusable(c.Name, c.Kind, "this gateway builds no background credentials")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var err error
	switch c.Kind {
	case provider.VertexAI:
		c.Google, err = s.creds.Google(ctx, c.Name, c.Credential)
	case provider.AzureOpenAI:
		c.Azure, err = s.creds.Azure(ctx, c.Name, c.Credential)
	default:
		c.AWS, err = s.creds.AWS(ctx, c.Name, c.Credential, c.BedrockRegion)
	}
	if err != nil {
		// The credential packages' errors quote no secret.
		return provider.Unusable(c.Name, c.Kind, "credential: "+err.Error())
	}
	return nil
}

// kindOf maps config's provider type to the adapter kind; an unknown type
// becomes KindUnknown, whose provider is unusable.
func kindOf(t configv1.Provider_Type) provider.Kind {
	switch t {
	case configv1.Provider_TYPE_OPENAI_COMPATIBLE:
		return provider.OpenAICompatible
	case configv1.Provider_TYPE_OPENAI:
		return provider.OpenAI
	case configv1.Provider_TYPE_ANTHROPIC:
		return provider.Anthropic
	case configv1.Provider_TYPE_AZURE_OPENAI:
		return provider.AzureOpenAI
	case configv1.Provider_TYPE_GEMINI:
		return provider.Gemini
	case configv1.Provider_TYPE_VERTEX_AI:
		return provider.VertexAI
	case configv1.Provider_TYPE_BEDROCK:
		return provider.Bedrock
	default:
		return provider.KindUnknown
	}
}

// Freshness tracks whether a followed stream is connected, and since when
// it is not: the age of what the gateway holds is zero while the stream
// is up (every change arrives at once) and grows from the moment it
// broke. It is safe for concurrent use.
type Freshness struct {
	connected atomic.Bool
	seen      atomic.Bool
	downSince atomic.Int64 // unix nanos
}

// Up records a working stream (a snapshot or change just arrived).
func (f *Freshness) Up() {
	f.seen.Store(true)
	f.connected.Store(true)
}

// Down records a broken stream at now, unless it was already down.
func (f *Freshness) Down(now time.Time) {
	if f.connected.Swap(false) || f.downSince.Load() == 0 {
		f.downSince.Store(now.UnixNano())
	}
}

// Age is how stale the held state may be at now; ok is false before the
// first successful stream.
func (f *Freshness) Age(now time.Time) (age time.Duration, ok bool) {
	if !f.seen.Load() {
		return 0, false
	}
	if f.connected.Load() {
		return 0, true
	}
	return now.Sub(time.Unix(0, f.downSince.Load())), true
}
