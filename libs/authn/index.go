package authn

import (
	"crypto/subtle"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

type entry struct {
	hmac      [32]byte
	principal Principal
	expires   time.Time // zero: never
}

type indexState struct {
	version int64
	byHMAC  map[[32]byte]*entry
	byID    map[string][32]byte
}

// Index is the in-memory key index: every usable key's HMAC and owner.
// Reads are lock-free (an immutable map behind an atomic pointer); writers
// copy the map, which is cheap at the rate keys change and keeps every
// request free of locks. It is safe for concurrent use.
type Index struct {
	hasher *Hasher
	state  atomic.Pointer[indexState]
	mu     sync.Mutex // serialises writers
	ready  atomic.Bool
	synced atomic.Int64 // unix nanos of the last update
}

// NewIndex returns an empty index that hashes presented keys with h. It is
// not Ready until the first Replace.
func NewIndex(h *Hasher) *Index {
	ix := &Index{hasher: h}
	ix.state.Store(&indexState{byHMAC: map[[32]byte]*entry{}, byID: map[string][32]byte{}})
	return ix
}

// Ready reports whether the index has had its first snapshot.
func (ix *Index) Ready() bool { return ix.ready.Load() }

// Version is the key-index version the index holds.
func (ix *Index) Version() int64 { return ix.state.Load().version }

// LastUpdate is when the index last changed or was confirmed by a snapshot.
func (ix *Index) LastUpdate() time.Time { return time.Unix(0, ix.synced.Load()) }

// Len is the number of keys in the index.
func (ix *Index) Len() int { return len(ix.state.Load().byHMAC) }

// Replace swaps in a whole snapshot at version.
func (ix *Index) Replace(version int64, entries []*identityv1.KeyIndexEntry) {
	s := &indexState{version: version, byHMAC: make(map[[32]byte]*entry, len(entries)), byID: make(map[string][32]byte, len(entries))}
	for _, e := range entries {
		s.put(e)
	}
	ix.mu.Lock()
	ix.state.Store(s)
	ix.mu.Unlock()
	ix.synced.Store(time.Now().UnixNano())
	ix.ready.Store(true)
}

// Upsert adds or changes one key. Changes older than the index are ignored.
func (ix *Index) Upsert(version int64, e *identityv1.KeyIndexEntry) {
	ix.update(version, func(s *indexState) { s.drop(e.GetKeyId()); s.put(e) })
}

// Remove drops one key. Changes older than the index are ignored.
func (ix *Index) Remove(version int64, keyID string) {
	ix.update(version, func(s *indexState) { s.drop(keyID) })
}

func (ix *Index) update(version int64, apply func(*indexState)) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.state.Load()
	if version <= old.version {
		return
	}
	s := &indexState{version: version, byHMAC: make(map[[32]byte]*entry, len(old.byHMAC)+1), byID: make(map[string][32]byte, len(old.byID)+1)}
	for k, v := range old.byHMAC {
		s.byHMAC[k] = v
	}
	for k, v := range old.byID {
		s.byID[k] = v
	}
	apply(s)
	ix.state.Store(s)
	ix.synced.Store(time.Now().UnixNano())
}

func (s *indexState) put(e *identityv1.KeyIndexEntry) {
	if len(e.GetKeyHmac()) != 32 || e.GetKeyId() == "" {
		return
	}
	var h [32]byte
	copy(h[:], e.GetKeyHmac())
	en := &entry{hmac: h, principal: Principal{
		Subject:      "keys/" + e.GetKeyId(),
		Kind:         KindAPIKey,
		KeyID:        e.GetKeyId(),
		Prefix:       e.GetPrefix(),
		Role:         e.GetRole(),
		Organization: e.GetOrganization(),
		Project:      e.GetProject(),
		// A copy, so that the entry the caller passed stays theirs.
		AllowedModels: slices.Clone(e.GetAllowedModels()),
	}}
	if e.GetExpireTime() != nil {
		en.expires = e.GetExpireTime().AsTime()
	}
	s.byHMAC[h] = en
	s.byID[e.GetKeyId()] = h
}

func (s *indexState) drop(keyID string) {
	if h, ok := s.byID[keyID]; ok {
		delete(s.byHMAC, h)
		delete(s.byID, keyID)
	}
}

// Authenticate returns the owner of key, or ErrUnauthenticated when the key
// is malformed, unknown, revoked or expired at now.
func (ix *Index) Authenticate(key string, now time.Time) (Principal, error) {
	if !wellFormed(key) {
		return Principal{}, ErrUnauthenticated
	}
	var h [32]byte
	copy(h[:], ix.hasher.Hash(key))
	e, ok := ix.state.Load().byHMAC[h]
	// The map lookup is by HMAC, which a caller cannot steer; the final
	// comparison is constant-time all the same.
	if !ok || subtle.ConstantTimeCompare(e.hmac[:], h[:]) != 1 {
		return Principal{}, ErrUnauthenticated
	}
	if !e.expires.IsZero() && !now.Before(e.expires) {
		return Principal{}, ErrUnauthenticated
	}
	return e.principal, nil
}
