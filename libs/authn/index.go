package authn

import (
	"crypto/subtle"
	"maps"
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
	// members maps users/{user} to the user's role in each orgs/{org}.
	// The inner maps are never modified once stored: a change replaces
	// the user's map, so Principals may share it.
	members map[string]map[string]identityv1.OrgRole
}

func newState(version int64, keys, users int) *indexState {
	return &indexState{version: version, byHMAC: make(map[[32]byte]*entry, keys),
		byID: make(map[string][32]byte, keys), members: make(map[string]map[string]identityv1.OrgRole, users)}
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
	ix.state.Store(newState(0, 0, 0))
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

// Replace swaps in a whole snapshot at version: the keys and the
// organization memberships.
func (ix *Index) Replace(version int64, entries []*identityv1.KeyIndexEntry, memberships ...*identityv1.MembershipEntry) {
	s := newState(version, len(entries), len(memberships))
	for _, e := range entries {
		s.put(e)
	}
	for _, m := range memberships {
		s.setRole(m.GetUser(), m.GetOrganization(), m.GetRole())
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

// UpsertMembership sets a user's role in an organization. Changes older
// than the index are ignored.
func (ix *Index) UpsertMembership(version int64, m *identityv1.MembershipEntry) {
	ix.update(version, func(s *indexState) { s.setRole(m.GetUser(), m.GetOrganization(), m.GetRole()) })
}

// RemoveMembership ends a user's membership of an organization. Changes
// older than the index are ignored.
func (ix *Index) RemoveMembership(version int64, m *identityv1.MembershipEntry) {
	ix.update(version, func(s *indexState) {
		s.setRole(m.GetUser(), m.GetOrganization(), identityv1.OrgRole_ORG_ROLE_UNSPECIFIED)
	})
}

// Roles returns the role of user (users/{user}) in each organization it is
// a member of, keyed by orgs/{org}. The map is shared: never modify it.
func (ix *Index) Roles(user string) map[string]identityv1.OrgRole {
	return ix.state.Load().members[user]
}

func (ix *Index) update(version int64, apply func(*indexState)) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old := ix.state.Load()
	if version <= old.version {
		return
	}
	// Copying every map on each change keeps reads lock-free; keys and
	// memberships change at human rates, so the cost is fine.
	s := newState(version, len(old.byHMAC)+1, len(old.members)+1)
	maps.Copy(s.byHMAC, old.byHMAC)
	maps.Copy(s.byID, old.byID)
	maps.Copy(s.members, old.members)
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
		AllowedModels:   slices.Clone(e.GetAllowedModels()),
		AllowedMCPTools: slices.Clone(e.GetAllowedMcpTools()),
		Owner:           e.GetOwner(),
	}}
	if e.GetExpireTime() != nil {
		en.expires = e.GetExpireTime().AsTime()
	}
	s.byHMAC[h] = en
	s.byID[e.GetKeyId()] = h
}

// setRole sets user's role in org; ORG_ROLE_UNSPECIFIED ends the
// membership. It replaces the user's map rather than changing it.
func (s *indexState) setRole(user, org string, role identityv1.OrgRole) {
	if user == "" || org == "" {
		return
	}
	roles := maps.Clone(s.members[user])
	if roles == nil {
		roles = map[string]identityv1.OrgRole{}
	}
	if role == identityv1.OrgRole_ORG_ROLE_UNSPECIFIED {
		delete(roles, org)
	} else {
		roles[org] = role
	}
	if len(roles) == 0 {
		delete(s.members, user)
		return
	}
	s.members[user] = roles
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
