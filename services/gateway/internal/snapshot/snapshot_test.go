package snapshot_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	upstream "github.com/moat-ai/moat/services/gateway/internal/credential"
	"github.com/moat-ai/moat/services/gateway/internal/provider"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

const credential = "sk-provider-secret-for-tests"

func keyring(t *testing.T) *secretbox.Keyring {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	k, err := secretbox.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func orgRes(name string) *configv1.ConfigResource {
	return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Organization{Organization: &configv1.Organization{Name: name}}}
}

func projectRes(name string) *configv1.ConfigResource {
	return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Project{Project: &configv1.Project{Name: name}}}
}

// providerRes seals credential under aad (the provider's own name when empty).
func providerRes(t *testing.T, k *secretbox.Keyring, name, baseURL, aad string) *configv1.ConfigResource {
	t.Helper()
	gp := &configv1.GatewayProvider{Provider: &configv1.Provider{Name: name, Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: baseURL}}
	if k != nil {
		if aad == "" {
			aad = name
		}
		s, err := k.Seal([]byte(credential), []byte(aad))
		if err != nil {
			t.Fatal(err)
		}
		gp.Credential = &configv1.SealedSecret{KekId: s.KEKID, WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext}
	}
	return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: gp}}
}

func routeRes(name, model, provider string) *configv1.ConfigResource {
	return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Route{Route: &configv1.Route{
		Name: name, Model: model, Provider: provider, UpstreamModel: "up-" + model,
	}}}
}

// resolved is a route as a test compares it.
type resolved struct {
	Route, Provider, ChatURL, Authorization, Unusable, UpstreamJSON string
}

func resolve(s *snapshot.Snapshot, project, model string) *resolved {
	r, ok := s.Route(project, model)
	if !ok {
		return nil
	}
	got := &resolved{Route: r.Name, Provider: r.Provider.Name, Unusable: r.Provider.Unusable, UpstreamJSON: string(r.UpstreamModelJSON)}
	if r.Provider.Unusable == "" {
		// What the adapter sends is the provider's URL and credential.
		req, err := r.Provider.NewRequest(context.Background(), provider.Call{API: wire.OpenAIChat, Body: []byte("{}")})
		if err != nil {
			panic(err) // a usable provider always builds its request
		}
		got.ChatURL, got.Authorization = req.URL.String(), req.Header.Get("Authorization")
	}
	return got
}

func TestReplace(t *testing.T) {
	t.Parallel()
	k := keyring(t)
	var logs bytes.Buffer
	st := snapshot.NewStore(k, slog.New(slog.NewJSONHandler(&logs, nil)))
	if st.Ready() {
		t.Fatal("Ready() before the first snapshot")
	}
	st.Replace(5, []*configv1.ConfigResource{
		orgRes("orgs/a"), orgRes("orgs/b"),
		projectRes("orgs/a/projects/p"), projectRes("orgs/b/projects/q"),
		providerRes(t, k, "orgs/a/providers/good", "http://127.0.0.1:9/v1/", ""),
		providerRes(t, nil, "orgs/a/providers/keyless", "http://127.0.0.1:9/v1", ""),
		providerRes(t, k, "orgs/a/providers/moved", "http://127.0.0.1:9/v1", "orgs/a/providers/elsewhere"),
		providerRes(t, k, "orgs/a/providers/relative", "/v1", ""),
		providerRes(t, k, "orgs/b/providers/theirs", "http://127.0.0.1:9/v1", ""),
		routeRes("orgs/a/projects/p/routes/r1", "good", "orgs/a/providers/good"),
		routeRes("orgs/a/projects/p/routes/r2", "keyless", "orgs/a/providers/keyless"),
		routeRes("orgs/a/projects/p/routes/r3", "moved", "orgs/a/providers/moved"),
		routeRes("orgs/a/projects/p/routes/r4", "relative", "orgs/a/providers/relative"),
		routeRes("orgs/a/projects/p/routes/r5", "theirs", "orgs/b/providers/theirs"), // another org's provider
		routeRes("orgs/a/projects/p/routes/r6", "ghost", "orgs/a/providers/missing"),
		routeRes("orgs/a/projects/gone/routes/r7", "orphan", "orgs/a/providers/good"),
	})
	if !st.Ready() || st.Load().Version() != 5 {
		t.Fatalf("Ready() = %v, Version() = %d; want true, 5", st.Ready(), st.Load().Version())
	}
	s := st.Load()
	const p = "orgs/a/projects/p"
	got := map[string]*resolved{}
	for _, m := range []string{"good", "keyless", "moved", "relative", "theirs", "ghost"} {
		got[m] = resolve(s, p, m)
	}
	got["orphan"] = resolve(s, "orgs/a/projects/gone", "orphan")
	want := map[string]*resolved{
		"good":    {"orgs/a/projects/p/routes/r1", "orgs/a/providers/good", "http://127.0.0.1:9/v1/chat/completions", "Bearer " + credential, "", `"up-good"`},
		"keyless": {"orgs/a/projects/p/routes/r2", "orgs/a/providers/keyless", "http://127.0.0.1:9/v1/chat/completions", "", "", `"up-keyless"`},
		"moved": {"orgs/a/projects/p/routes/r3", "orgs/a/providers/moved", "", "",
			"credential does not open with the gateway's key-encryption keys", `"up-moved"`},
		"relative": {"orgs/a/projects/p/routes/r4", "orgs/a/providers/relative", "", "",
			"base URL is not an absolute http(s) URL", `"up-relative"`},
		"theirs": nil, "ghost": nil, "orphan": nil,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	var models []string
	for _, r := range s.Routes(p) {
		models = append(models, r.Model)
	}
	if diff := cmp.Diff([]string{"good", "keyless", "moved", "relative"}, models); diff != "" {
		t.Errorf("Routes(%s) mismatch (-want +got):\n%s", p, diff)
	}
	if strings.Contains(logs.String(), credential) {
		t.Errorf("the credential reached the logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "orgs/a/providers/moved") {
		t.Errorf("logs do not name the unusable provider:\n%s", logs.String())
	}
}

func TestUpsertDelete(t *testing.T) {
	t.Parallel()
	k := keyring(t)
	st := snapshot.NewStore(k, nil)
	st.Replace(10, []*configv1.ConfigResource{
		orgRes("orgs/a"), projectRes("orgs/a/projects/p"),
		providerRes(t, k, "orgs/a/providers/x", "http://127.0.0.1:9/v1", ""),
		routeRes("orgs/a/projects/p/routes/r1", "m1", "orgs/a/providers/x"),
	})
	before := st.Load()
	const p = "orgs/a/projects/p"
	steps := []struct {
		name    string
		apply   func()
		version int64
		models  []string
	}{
		{"add a route", func() { st.Upsert(11, routeRes("orgs/a/projects/p/routes/r2", "m2", "orgs/a/providers/x")) }, 11, []string{"m1", "m2"}},
		{"rename a model", func() { st.Upsert(12, routeRes("orgs/a/projects/p/routes/r1", "m1b", "orgs/a/providers/x")) }, 12, []string{"m1b", "m2"}},
		{"stale change ignored", func() { st.Upsert(12, routeRes("orgs/a/projects/p/routes/r3", "m3", "orgs/a/providers/x")) }, 12, []string{"m1b", "m2"}},
		{"delete a route", func() { st.Delete(13, "orgs/a/projects/p/routes/r2") }, 13, []string{"m1b"}},
		{"delete the provider", func() { st.Delete(14, "orgs/a/providers/x") }, 14, nil},
		{"provider back", func() { st.Upsert(15, providerRes(t, k, "orgs/a/providers/x", "http://127.0.0.1:9/v1", "")) }, 15, []string{"m1b"}},
		{"delete the project", func() { st.Delete(16, p) }, 16, nil},
	}
	for _, s := range steps {
		s.apply()
		snap := st.Load()
		var models []string
		for _, r := range snap.Routes(p) {
			models = append(models, r.Model)
		}
		if snap.Version() != s.version {
			t.Errorf("%s: Version() = %d, want %d", s.name, snap.Version(), s.version)
		}
		if diff := cmp.Diff(s.models, models); diff != "" {
			t.Errorf("%s: models mismatch (-want +got):\n%s", s.name, diff)
		}
	}
	// Snapshots are immutable: the first one is as it was.
	if _, ok := before.Route(p, "m1"); !ok || before.Version() != 10 || len(before.Routes(p)) != 1 {
		t.Error("a published snapshot changed")
	}
}

func TestProviderNeverPrintsItsCredential(t *testing.T) {
	t.Parallel()
	k := keyring(t)
	st := snapshot.NewStore(k, nil)
	st.Replace(1, []*configv1.ConfigResource{
		orgRes("orgs/a"), projectRes("orgs/a/projects/p"),
		providerRes(t, k, "orgs/a/providers/x", "http://127.0.0.1:9/v1", ""),
		routeRes("orgs/a/projects/p/routes/r1", "m1", "orgs/a/providers/x"),
	})
	r, _ := st.Load().Route("orgs/a/projects/p", "m1")
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("route", "provider", r.Provider, "route", r)
	if strings.Contains(logs.String(), credential) {
		t.Errorf("a log line holds the credential: %s", logs.String())
	}
}

func TestFreshness(t *testing.T) {
	t.Parallel()
	var f snapshot.Freshness
	t0 := time.Unix(1000, 0)
	if _, ok := f.Age(t0); ok {
		t.Error("Age before any stream reported")
	}
	f.Down(t0) // never connected: still nothing to report
	if _, ok := f.Age(t0); ok {
		t.Error("Age reported after a failed first connection")
	}
	f.Up()
	if a, ok := f.Age(t0.Add(time.Hour)); !ok || a != 0 {
		t.Errorf("Age while up = %v, %v; want 0, true", a, ok)
	}
	f.Down(t0.Add(10 * time.Second))
	f.Down(t0.Add(20 * time.Second)) // a failed reconnect keeps the first time
	if a, _ := f.Age(t0.Add(40 * time.Second)); a != 30*time.Second {
		t.Errorf("Age while down = %v, want 30s since the stream broke", a)
	}
	f.Up()
	if a, _ := f.Age(t0.Add(time.Minute)); a != 0 {
		t.Errorf("Age after reconnecting = %v, want 0", a)
	}
}

// sealedProvider is a provider of type typ whose credential is cred.
func sealedProvider(t *testing.T, k *secretbox.Keyring, name string, typ configv1.Provider_Type, baseURL, cred string) *configv1.ConfigResource {
	t.Helper()
	s, err := k.Seal([]byte(cred), []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: &configv1.GatewayProvider{
		Provider:   &configv1.Provider{Name: name, Type: typ, BaseUrl: baseURL},
		Credential: &configv1.SealedSecret{KekId: s.KEKID, WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext},
	}}}
}

// TestAzureEntra checks that Azure OpenAI providers with Entra ID client
// credentials get theirs from the Keeper (and wait for its token), that
// one whose credential is refused is unusable with a reason that holds no
// secret, and that API keys need no Keeper.
func TestAzureEntra(t *testing.T) {
	t.Parallel()
	const (
		az     = configv1.Provider_TYPE_AZURE_OPENAI
		base   = "https://res.openai.azure.com"
		secret = "SECRET-entra-client"
	)
	entra := `{"tenantId": "t1", "clientId": "c1", "clientSecret": "` + secret + `"}`
	k := keyring(t)
	resources := []*configv1.ConfigResource{
		sealedProvider(t, k, "orgs/a/providers/key", az, base, credential),
		sealedProvider(t, k, "orgs/a/providers/entra", az, base, entra),
		sealedProvider(t, k, "orgs/a/providers/bad", az, base, `{"tenantId": "t1", "clientId": "`+secret+`"}`),
	}
	var logs bytes.Buffer
	st := snapshot.NewStore(k, slog.New(slog.NewJSONHandler(&logs, nil))).WithCredentials(upstream.NewKeeper(http.DefaultClient, nil))
	st.Replace(1, resources)
	s := st.Load()
	call := provider.Call{API: wire.OpenAIChat, Model: "m", Body: []byte("{}")}

	p, _ := s.Provider("orgs/a/providers/key")
	if req, err := p.NewRequest(t.Context(), call); err != nil || req.Header.Get("Api-Key") != credential {
		t.Errorf("API key provider: %v, %v", req, err)
	}
	p, _ = s.Provider("orgs/a/providers/entra")
	if p.Unusable != "" {
		t.Fatalf("Entra provider unusable: %s", p.Unusable)
	}
	// The Keeper is not running: no token yet, and no request.
	if _, err := p.NewRequest(t.Context(), call); !errors.Is(err, upstream.ErrNoToken) {
		t.Errorf("Entra provider before a token: %v, want ErrNoToken", err)
	}
	p, _ = s.Provider("orgs/a/providers/bad")
	if want := "credential: azure credential: invalid Entra ID client credentials: clientSecret is missing"; p.Unusable != want {
		t.Errorf("bad Entra provider Unusable = %q, want %q", p.Unusable, want)
	}

	bare := snapshot.NewStore(k, slog.New(slog.NewJSONHandler(&logs, nil)))
	bare.Replace(1, resources)
	if p, _ := bare.Load().Provider("orgs/a/providers/entra"); p.Unusable != "this gateway builds no background credentials" {
		t.Errorf("Entra provider without a Keeper: Unusable = %q", p.Unusable)
	}
	if p, _ := bare.Load().Provider("orgs/a/providers/key"); p.Unusable != "" {
		t.Errorf("API key provider without a Keeper: Unusable = %q", p.Unusable)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("a log line holds the secret: %s", logs.String())
	}
}
