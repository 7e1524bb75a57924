// Package secretbox seals small secrets (provider credentials) with
// envelope encryption: a fresh data key encrypts each secret with
// AES-256-GCM, and a key-encryption key (KEK) from the environment encrypts
// the data key. The KEK's id travels with the sealed value, so KEKs can
// rotate: new secrets are sealed with the first key of the ring, and every
// key of the ring opens.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Sealed is a secret under envelope encryption.
type Sealed struct {
	// KEKID names the key-encryption key that wrapped the data key.
	KEKID string
	// WrappedKey is the data key sealed by the KEK (nonce prepended).
	WrappedKey []byte
	// Ciphertext is the secret sealed by the data key (nonce prepended).
	Ciphertext []byte
}

// ErrOpen reports a sealed value that does not open: unknown KEK id, wrong
// associated data, or tampered bytes. It says no more, on purpose.
var ErrOpen = errors.New("sealed secret does not open")

// Keyring holds the key-encryption keys. It is safe for concurrent use.
type Keyring struct {
	active string
	keys   map[string]cipher.AEAD
}

// ParseKeyring reads "id:base64key[,id:base64key...]" (the MOAT_KEK format);
// each key is 32 bytes of standard or URL-safe base64, and the first one
// seals. Errors never quote key material.
func ParseKeyring(spec string) (*Keyring, error) {
	k := &Keyring{keys: map[string]cipher.AEAD{}}
	for i, part := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || id == "" || b64 == "" {
			return nil, fmt.Errorf("key-encryption key %d: want id:base64", i+1)
		}
		if strings.ContainsAny(id, " \t") {
			return nil, fmt.Errorf("key-encryption key %d: id has whitespace", i+1)
		}
		raw, err := decode(b64)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key-encryption key %q: want 32 bytes of base64", id)
		}
		if _, dup := k.keys[id]; dup {
			return nil, fmt.Errorf("key-encryption key %q appears twice", id)
		}
		aead, err := newAEAD(raw)
		if err != nil {
			return nil, err
		}
		k.keys[id] = aead
		if i == 0 {
			k.active = id
		}
	}
	return k, nil
}

func decode(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// ActiveID is the id of the key that seals.
func (k *Keyring) ActiveID() string { return k.active }

// Seal encrypts plaintext under a fresh data key wrapped by the active KEK.
// aad (associated data, e.g. the owning resource's name) must be given again
// to open: a sealed value moved to another resource does not open.
func (k *Keyring) Seal(plaintext, aad []byte) (Sealed, error) {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return Sealed{}, fmt.Errorf("data key: %w", err)
	}
	data, err := newAEAD(dek)
	if err != nil {
		return Sealed{}, err
	}
	ct, err := seal(data, plaintext, aad)
	if err != nil {
		return Sealed{}, err
	}
	// The wrapped key is bound to the KEK id and the same aad.
	wrapped, err := seal(k.keys[k.active], dek, wrapAAD(k.active, aad))
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{KEKID: k.active, WrappedKey: wrapped, Ciphertext: ct}, nil
}

// Open decrypts s, which must have been sealed with the same aad.
func (k *Keyring) Open(s Sealed, aad []byte) ([]byte, error) {
	kek, ok := k.keys[s.KEKID]
	if !ok {
		return nil, fmt.Errorf("%w: unknown key-encryption key %q", ErrOpen, s.KEKID)
	}
	dek, err := open(kek, s.WrappedKey, wrapAAD(s.KEKID, aad))
	if err != nil {
		return nil, ErrOpen
	}
	data, err := newAEAD(dek)
	if err != nil {
		return nil, ErrOpen
	}
	pt, err := open(data, s.Ciphertext, aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

func wrapAAD(kekID string, aad []byte) []byte {
	return append([]byte("moat-dek\x00"+kekID+"\x00"), aad...)
}

func seal(a cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return a.Seal(nonce, nonce, plaintext, aad), nil
}

func open(a cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, ErrOpen
	}
	return a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], aad)
}
