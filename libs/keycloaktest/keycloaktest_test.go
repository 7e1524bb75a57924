package keycloaktest_test

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/keycloaktest"
)

// A corporate realm holds its users in the groups asked for, and SignIn
// says where a flow stopped without repeating the password.
func TestCorpRealm(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, user, password := keycloaktest.Server(t)
	corp := keycloaktest.NewCorpRealm(t, u, user, password, "http://127.0.0.1:9999/broker/endpoint")
	if want := u + "/realms/" + corp.Realm; corp.Issuer != want {
		t.Errorf("Issuer = %q, want %q", corp.Issuer, want)
	}
	alicePassword := keycloaktest.RandomName("pw-")
	id := corp.AddUser(t, "alice", alicePassword, "alice@corp.example", "Alice", "Liddell", "ai-admins", "finance")

	kc := gocloak.NewClient(u)
	jwt, err := kc.LoginAdmin(ctx, user, password, "master")
	if err != nil {
		t.Fatalf("log in as admin: %v", err)
	}
	groups := func() []string {
		t.Helper()
		gs, err := kc.GetUserGroups(ctx, jwt.AccessToken, corp.Realm, id, gocloak.GetGroupsParams{})
		if err != nil {
			t.Fatalf("list groups: %v", err)
		}
		var names []string
		for _, g := range gs {
			names = append(names, gocloak.PString(g.Name))
		}
		slices.Sort(names)
		return names
	}
	if diff := cmp.Diff([]string{"ai-admins", "finance"}, groups()); diff != "" {
		t.Errorf("groups after AddUser mismatch (-want +got):\n%s", diff)
	}
	corp.SetGroups(t, id, "finance", "legal")
	if diff := cmp.Diff([]string{"finance", "legal"}, groups()); diff != "" {
		t.Errorf("groups after SetGroups mismatch (-want +got):\n%s", diff)
	}

	// The broker's client is confidential and has one redirect URI: a
	// sign-in elsewhere stops at Keycloak's error page.
	_, err = keycloaktest.SignIn(ctx, corp.Issuer, corp.ClientID, "http://127.0.0.1:9999/elsewhere", "alice", alicePassword, url.Values{"ui_locales": {"en"}})
	if err == nil || !strings.Contains(err.Error(), "redirect_uri") || strings.Contains(err.Error(), alicePassword) {
		t.Errorf("SignIn to an unregistered redirect URI = %v, want the error page named, without the password", err)
	}
	t.Logf("SignIn to an unregistered redirect URI: %v", err)
}
