// Package authntest helps tests of services that authenticate callers with
// package authn: shared test secrets, API keys and key-index entries, a
// fake identity service that streams a key index the way identity does, and
// a fake OIDC issuer that signs access tokens.
package authntest

import (
	"net"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/grpcclient"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

const (
	// KeySecret is a valid MOAT_KEY_SECRET for tests: base64 of 32 bytes.
	KeySecret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" //nolint:gosec // public by design: tests only, never a deployment's
	// InternalToken is a valid MOAT_INTERNAL_TOKEN for tests.
	InternalToken = "internal-token-for-tests-only"
)

// Env returns the variables of authn.Config set to KeySecret and
// InternalToken, and MOAT_IDENTITY_GRPC set to identityAddr unless it is
// empty (identity itself follows no one). The map is the caller's to change.
func Env(identityAddr string) map[string]string {
	e := map[string]string{
		"MOAT_KEY_SECRET":     KeySecret,
		"MOAT_INTERNAL_TOKEN": InternalToken,
	}
	if identityAddr != "" {
		e["MOAT_IDENTITY_GRPC"] = identityAddr
	}
	return e
}

// Hasher returns the Hasher of KeySecret, decoded as a service decodes it.
func Hasher(t testing.TB) *authn.Hasher {
	t.Helper()
	h, err := authn.Config{KeySecret: KeySecret}.Hasher()
	if err != nil {
		t.Fatalf("key secret: %v", err)
	}
	return h
}

// Key returns a fresh API key.
func Key(t testing.TB) string {
	t.Helper()
	k, err := authn.NewKey()
	if err != nil {
		t.Fatalf("new key: %v", err)
	}
	return k
}

// Entry returns the key-index entry of key, as identity would stream it:
// id is the key id, org and project are empty for a platform admin.
func Entry(h *authn.Hasher, id, key string, role identityv1.KeyIndexEntry_Role, org, project string) *identityv1.KeyIndexEntry {
	return &identityv1.KeyIndexEntry{
		KeyId:        id,
		KeyHmac:      h.Hash(key),
		Prefix:       authn.DisplayPrefix(key),
		Role:         role,
		Organization: org,
		Project:      project,
	}
}

// Identity is a fake identity service. It serves WatchKeyIndex to callers
// holding its internal token: a snapshot of its entries, then every later
// Upsert and Remove, each at the next version. Its other methods are
// unimplemented. It is safe for concurrent use.
type Identity struct {
	identityv1.UnimplementedIdentityServiceServer
	token string
	addr  string

	mu      sync.Mutex
	version int64
	entries []*identityv1.KeyIndexEntry
	log     []*identityv1.WatchKeyIndexResponse // every change since the start
	changed chan struct{}                       // closed and replaced on each change
}

// StartIdentity serves a fake identity holding entries on a free loopback
// port until the test ends. Callers must present token.
func StartIdentity(t testing.TB, token string, entries ...*identityv1.KeyIndexEntry) *Identity {
	t.Helper()
	return StartIdentityAt(t, "127.0.0.1:0", token, entries...)
}

// StartIdentityAt is StartIdentity on addr, for a test that gives its
// service identity's address first and brings identity up later.
func StartIdentityAt(t testing.TB, addr, token string, entries ...*identityv1.KeyIndexEntry) *Identity {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen for the fake identity: %v", err)
	}
	f := &Identity{token: token, addr: lis.Addr().String(), version: 1, entries: slices.Clone(entries), changed: make(chan struct{})}
	srv := grpc.NewServer()
	identityv1.RegisterIdentityServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f
}

// Addr is the address the fake listens on.
func (f *Identity) Addr() string { return f.addr }

// Upsert adds e, or replaces the entry with its key id, and streams it to
// every watcher.
func (f *Identity) Upsert(e *identityv1.KeyIndexEntry) {
	f.change(&identityv1.WatchKeyIndexResponse{Event: &identityv1.WatchKeyIndexResponse_Upsert{Upsert: e}}, func() {
		i := slices.IndexFunc(f.entries, func(x *identityv1.KeyIndexEntry) bool { return x.GetKeyId() == e.GetKeyId() })
		if i < 0 {
			f.entries = append(f.entries, e)
		} else {
			f.entries[i] = e
		}
	})
}

// Remove drops the entry with keyID and streams the removal to every
// watcher.
func (f *Identity) Remove(keyID string) {
	f.change(&identityv1.WatchKeyIndexResponse{Event: &identityv1.WatchKeyIndexResponse_RemoveKeyId{RemoveKeyId: keyID}}, func() {
		f.entries = slices.DeleteFunc(f.entries, func(x *identityv1.KeyIndexEntry) bool { return x.GetKeyId() == keyID })
	})
}

// change applies a change to the entries and logs m, the message that
// tells watchers of it, at the next version.
func (f *Identity) change(m *identityv1.WatchKeyIndexResponse, apply func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	apply()
	f.version++
	m.Version = f.version
	f.log = append(f.log, m)
	close(f.changed)
	f.changed = make(chan struct{})
}

// WatchKeyIndex implements identityv1.IdentityServiceServer.
func (f *Identity) WatchKeyIndex(_ *identityv1.WatchKeyIndexRequest, stream grpc.ServerStreamingServer[identityv1.WatchKeyIndexResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if got := md.Get(grpcclient.InternalTokenKey); len(got) != 1 || got[0] != f.token {
		return status.Error(codes.Unauthenticated, "internal token required")
	}
	f.mu.Lock()
	snap := &identityv1.WatchKeyIndexResponse{Version: f.version, Event: &identityv1.WatchKeyIndexResponse_Snapshot{
		Snapshot: &identityv1.KeyIndexSnapshot{Entries: slices.Clone(f.entries)},
	}}
	seen := len(f.log)
	f.mu.Unlock()
	if err := stream.Send(snap); err != nil {
		return err
	}
	for {
		f.mu.Lock()
		pending, changed := f.log[seen:], f.changed
		seen = len(f.log)
		f.mu.Unlock()
		for _, m := range pending {
			if err := stream.Send(m); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}
