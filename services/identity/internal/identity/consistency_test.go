package identity_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

var (
	call     = identity.Call{Actor: "keys/admin", Action: "test"}
	platform = identity.Actor{Admin: true, PlatformAdmin: true}
)

// hasher is a stand-in identity.Hasher: these tests never authenticate.
type hasher struct{}

func (hasher) Hash(k string) []byte { b := make([]byte, 32); copy(b, k); return b }

func newService(t *testing.T, store identity.Store) *identity.Service {
	t.Helper()
	return identity.NewService(store, hasher{}, time.Now)
}

func newStore(t *testing.T) *postgres.Store {
	t.Helper()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	return postgres.NewStore(pool, nil)
}

// afterRead runs once, right after the next read of index changes, with
// that read's result already taken: changes it makes commit between two
// rounds of a watcher.
type afterRead struct {
	identity.Store
	mu   sync.Mutex
	hook func()
}

func (a *afterRead) ChangesSince(ctx context.Context, v int64, limit int) ([]identity.Key, []identity.Member, error) {
	keys, members, err := a.Store.ChangesSince(ctx, v, limit)
	a.mu.Lock()
	hook := a.hook
	a.hook = nil
	a.mu.Unlock()
	if hook != nil {
		hook()
	}
	return keys, members, err
}

// recorder is an identity.IndexSink that tells what it received.
type recorder struct {
	mu      sync.Mutex
	version int64
	removed map[string]bool
	rounds  chan struct{}
}

func (r *recorder) Snapshot(v int64, _ []identity.Key, _ []identity.Member) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version = v
	r.rounds <- struct{}{}
	return nil
}

func (r *recorder) Member(m identity.Member) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version = m.Version
	return nil
}

func (r *recorder) Upsert(k identity.Key) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version = k.Version
	return nil
}

func (r *recorder) Remove(v int64, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed[id], r.version = true, v
	return nil
}

func (r *recorder) wasRemoved(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removed[id]
}

// A key change and a later membership change that commit between a
// watcher's rounds both reach it: keys and memberships are read in one
// snapshot, so the watcher never moves past a key change it has not seen
// (which would leave a revoked key working on a gateway).
func TestWatchIndexMissesNoKeyChange(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store := &afterRead{Store: newStore(t)}
	svc := newService(t, store)
	if _, err := svc.CreateMember(ctx, call, "orgs/acme", "u1", identity.OrgMember); err != nil {
		t.Fatal(err)
	}
	k, _, err := svc.CreateKey(ctx, call, platform, identity.CreateRequest{Parent: "orgs/acme/projects/web"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{removed: map[string]bool{}, rounds: make(chan struct{}, 1)}
	wake := make(chan struct{})
	go func() { _ = svc.WatchIndex(ctx, wake, time.Hour, rec) }() // ends with ctx; the recorder is what the test checks
	<-rec.rounds
	store.mu.Lock()
	store.hook = func() {
		if _, err := svc.RevokeKey(ctx, call, platform, k.Name()); err != nil {
			t.Error(err)
		}
		if _, err := svc.UpdateMember(ctx, call, platform, "orgs/acme/members/u1", identity.OrgAdmin); err != nil {
			t.Error(err)
		}
	}
	store.mu.Unlock()
	wake <- struct{}{} // this round reads, then the hook commits both changes
	wake <- struct{}{} // the next round must bring both
	deadline := time.Now().Add(5 * time.Second)
	for !rec.wasRemoved(k.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher never learned that key %s was revoked", k.ID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// broker is an identity.Broker in memory: it records what it was asked to
// put, and reports one brokered user.
type broker struct {
	mu      sync.Mutex
	puts    []identity.Provider
	secrets []string
	user    identity.BrokeredUser
}

func (b *broker) PutIdentityProvider(_ context.Context, p identity.Provider, secret string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.puts, b.secrets = append(b.puts, p), append(b.secrets, secret)
	return nil
}

func (b *broker) DeleteIdentityProvider(context.Context, string) error { return nil }

func (b *broker) BrokeredUser(context.Context, string) (identity.BrokeredUser, error) {
	return b.user, nil
}

func (b *broker) RedirectURI(alias string) string { return "https://keycloak.example/broker/" + alias }

func oidcProvider(domains ...string) identity.Provider {
	return identity.Provider{DisplayName: "corp", OIDC: &identity.OIDCSettings{Issuer: "https://idp.example", ClientID: "moat"},
		DefaultRole: identity.OrgMember, EmailDomains: domains}
}

// A member an admin removed stays removed: signing in again through the
// organization's identity provider does not bring the membership back.
func TestJoinNeverRevivesARemovedMember(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	svc := newService(t, newStore(t))
	svc.Broker = &broker{user: identity.BrokeredUser{Email: "bob@acme.example", EmailVerified: true, Aliases: []string{"acme.corp"}}}
	if _, err := svc.CreateIdentityProvider(ctx, call, "orgs/acme", "corp", oidcProvider("acme.example"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	if res, err := svc.Join(ctx, call, "bob"); err != nil || len(res.Joined) != 1 {
		t.Fatalf("first Join = %+v, %v; want one membership", res, err)
	}
	if _, err := svc.DeleteMember(ctx, call, platform, "orgs/acme/members/bob"); err != nil {
		t.Fatal(err)
	}
	if res, err := svc.Join(ctx, call, "bob"); err != nil || len(res.Joined) != 0 {
		t.Errorf("Join after the removal = %+v, %v; want nothing", res, err)
	}
	if ms, err := svc.Memberships(ctx, "bob"); err != nil || len(ms) != 0 {
		t.Errorf("the removed member's memberships = %+v, %v; want none", ms, err)
	}
	// An admin may still add them back.
	if _, err := svc.CreateMember(ctx, call, "orgs/acme", "bob", identity.OrgMember); err != nil {
		t.Errorf("an admin adding the removed member back: %v", err)
	}
}

// An update the database refuses leaves Keycloak alone, and a client
// secret outside the masked fields changes nothing.
func TestUpdateIdentityProviderTouchesKeycloakLast(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	svc := newService(t, newStore(t))
	b := &broker{}
	svc.Broker = b
	if _, err := svc.CreateIdentityProvider(ctx, call, "orgs/acme", "corp", oidcProvider("acme.example"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateIdentityProvider(ctx, call, "orgs/other", "corp", oidcProvider("other.example"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	puts := len(b.puts)
	in := oidcProvider("other.example")
	in.OIDC.Issuer = "https://elsewhere.example"
	if _, err := svc.UpdateIdentityProvider(ctx, call, "orgs/acme/identityProviders/corp", in, "new-secret", []string{"oidc", "email_domains"}); !errors.Is(err, identity.ErrDomainTaken) {
		t.Fatalf("update claiming another provider's domain = %v, want ErrDomainTaken", err)
	}
	if len(b.puts) != puts {
		t.Errorf("a refused update reached Keycloak: %+v", b.puts[puts:])
	}
	if _, err := svc.UpdateIdentityProvider(ctx, call, "orgs/acme/identityProviders/corp", identity.Provider{DisplayName: "Acme"}, "sneaky", []string{"display_name"}); err != nil {
		t.Fatal(err)
	}
	if got := b.secrets[len(b.secrets)-1]; got != "" {
		t.Errorf("an update of display_name sent client secret %q to Keycloak", got)
	}
}
