// Package authn authenticates Moat's callers the same way in every service:
// API keys looked up in an in-memory key index that identity streams to
// everyone (so no request waits on identity), OIDC access tokens checked
// against the issuer's cached keys, the internal token on the services'
// own watch streams, and the Principal a handler authorizes.
//
// It is the one package of libs allowed to read a business contract,
// identity's key index, because every service must verify keys alike.
package authn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeyPrefix starts every Moat API key, so that secret scanners and humans
// can recognise one.
const KeyPrefix = "moat_"

const (
	keyBytes   = 32
	keyLength  = len(KeyPrefix) + 43 // 32 bytes of unpadded base64url
	displayLen = 12
)

// NewKey returns a fresh API key: KeyPrefix and 256 random bits in
// unpadded base64url.
func NewKey() (string, error) {
	b := make([]byte, keyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random key: %w", err)
	}
	return KeyPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// DisplayPrefix is the part of a key that may be shown and logged: enough
// to tell keys apart, far too little to use one.
func DisplayPrefix(key string) string {
	if len(key) <= displayLen {
		return key
	}
	return key[:displayLen]
}

// wellFormed is a cheap check run before any hashing, so that garbage is
// refused without work.
func wellFormed(key string) bool {
	if len(key) != keyLength || !strings.HasPrefix(key, KeyPrefix) {
		return false
	}
	for i := len(KeyPrefix); i < len(key); i++ {
		if !base64URL(key[i]) {
			return false
		}
	}
	return true
}

// Hasher computes the HMAC-SHA-256 under which keys are stored and looked
// up. The secret is shared by every service that verifies keys.
type Hasher struct{ secret []byte }

// NewHasher returns a Hasher for secret, which must be at least 32 bytes.
func NewHasher(secret []byte) (*Hasher, error) {
	if len(secret) < 32 {
		return nil, errors.New("key secret must be at least 32 bytes")
	}
	return &Hasher{secret: append([]byte(nil), secret...)}, nil
}

// Hash returns the 32-byte HMAC of key.
func (h *Hasher) Hash(key string) []byte {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte(key))
	return m.Sum(nil)
}

func base64URL(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
