package gateway

import (
	"encoding/binary"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// NewRequestID returns a UUIDv7 (RFC 9562) for a request that arrived at
// now: 48 bits of Unix milliseconds, then 74 random bits. It takes its
// randomness from the runtime's per-thread ChaCha8 generator, which needs
// no lock, unlike uuid.NewV7, whose monotonic counter is behind a mutex
// that every request of the process would contend on. Ids from one
// millisecond are not ordered among themselves; nothing relies on that.
func NewRequestID(now time.Time) uuid.UUID {
	var u uuid.UUID
	// Ids must be unique, not secret: nothing is authorized by knowing one.
	hi, lo := rand.Uint32(), rand.Uint64() //nolint:gosec // uniqueness, not secrecy
	binary.BigEndian.PutUint64(u[0:8], uint64(now.UnixMilli())<<16|uint64(hi&0xffff))
	binary.BigEndian.PutUint64(u[8:16], lo)
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // variant 10
	return u
}
