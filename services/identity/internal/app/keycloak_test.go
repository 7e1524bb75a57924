package app_test

import "testing"

// With MOAT_KEYCLOAK_URL set, identity sets up its realm at start: the
// realm appears, with the first platform admin in it (startWithKeycloak
// waits for that), and no Keycloak password reaches identity's log.
func TestServeBootstrapsKeycloak(t *testing.T) {
	t.Parallel()
	pf := startWithKeycloak(t)
	if pf.log.Contains(pf.adminPassword) || pf.log.Contains(pf.kcPass) {
		t.Error("a Keycloak password appears in identity's log")
	}
}
