package secretbox_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/moat-ai/moat/libs/secretbox"
)

func key(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k1, k2 := key(t), key(t)
	old, err := secretbox.ParseKeyring("k1:" + k1)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("sk-provider-credential")
	aad := []byte("orgs/a/providers/p")
	s, err := old.Seal(secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.Ciphertext, secret) || bytes.Contains(s.WrappedKey, secret) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := old.Open(s, aad)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v; want the secret", got, err)
	}

	// After rotation, the new key seals and the old one still opens.
	rotated, err := secretbox.ParseKeyring("k2:" + k2 + ", k1:" + k1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(s, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open after rotation = %q, %v", got, err)
	}
	s2, err := rotated.Seal(secret, aad)
	if err != nil || s2.KEKID != "k2" {
		t.Fatalf("Seal after rotation used %q, %v; want k2", s2.KEKID, err)
	}

	tests := []struct {
		name string
		s    secretbox.Sealed
		aad  []byte
	}{
		{"other resource", s, []byte("orgs/b/providers/p")},
		{"unknown key id", secretbox.Sealed{KEKID: "k9", WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext}, aad},
		{"key id swapped", secretbox.Sealed{KEKID: "k2", WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext}, aad},
		{"tampered ciphertext", secretbox.Sealed{KEKID: s.KEKID, WrappedKey: s.WrappedKey, Ciphertext: flip(s.Ciphertext)}, aad},
		{"tampered key", secretbox.Sealed{KEKID: s.KEKID, WrappedKey: flip(s.WrappedKey), Ciphertext: s.Ciphertext}, aad},
		{"truncated", secretbox.Sealed{KEKID: s.KEKID, WrappedKey: s.WrappedKey[:5], Ciphertext: s.Ciphertext}, aad},
	}
	for _, tt := range tests {
		if _, err := rotated.Open(tt.s, tt.aad); !errors.Is(err, secretbox.ErrOpen) {
			t.Errorf("%s: Open = %v, want ErrOpen", tt.name, err)
		}
	}
}

func flip(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)-1] ^= 1
	return c
}

func TestParseKeyringErrorsHideKeys(t *testing.T) {
	t.Parallel()
	short := base64.StdEncoding.EncodeToString([]byte("too-short-secret"))
	for _, spec := range []string{"", "nokey", "a:" + short, "a:!!notbase64!!", "a:" + key(t) + ",a:" + key(t)} {
		_, err := secretbox.ParseKeyring(spec)
		if err == nil {
			t.Errorf("ParseKeyring(%q) = nil error", spec)
			continue
		}
		if strings.Contains(err.Error(), short) {
			t.Errorf("ParseKeyring error quotes key material: %v", err)
		}
	}
}
