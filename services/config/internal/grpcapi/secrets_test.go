package grpcapi_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/grpcapi"
)

func secret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// RELIABILITY 17 for config: provider credentials, on success and failure
// paths, never appear in a response, an error, a log line, an outbox event
// or any database row, in plain, hex or base64 form. Gateways get them
// sealed, bound to their provider.
func TestCredentialHygiene(t *testing.T) {
	t.Parallel()
	h := newHarness(t, grpcapi.Options{})
	c := h.client
	created, updated, refused := secret(t, "sk-created-"), secret(t, "sk-updated-"), secret(t, "sk-refused-")
	secrets := []string{created, updated, refused}

	var seen []string // every response and error text
	record := func(m proto.Message, err error) {
		if err != nil {
			st, _ := status.FromError(err)
			seen = append(seen, st.String(), fmt.Sprint(st.Details()))
			return
		}
		b, merr := protojson.Marshal(m)
		if merr != nil {
			t.Fatal(merr)
		}
		seen = append(seen, string(b))
	}

	h.seed(t, created)
	provider := func(cred string) *configv1.Provider {
		return &configv1.Provider{Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: "https://api.example.com", Credential: cred}
	}
	r1, err := c.GetProvider(h.admin, &configv1.GetProviderRequest{Name: "orgs/acme/providers/openai"})
	record(r1, err)
	r2, err := c.UpdateProvider(h.admin, &configv1.UpdateProviderRequest{
		Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Credential: updated}, UpdateMask: mask("credential")})
	record(r2, err)
	if !r2.GetProvider().GetHasCredential() || r2.GetProvider().GetCredential() != "" {
		t.Errorf("UpdateProvider = %v, want has_credential and no credential", r2.GetProvider())
	}
	r3, err := c.ListProviders(h.admin, &configv1.ListProvidersRequest{Parent: "orgs/acme"})
	record(r3, err)

	// Failure paths that carry a credential.
	failures := []func() (proto.Message, error){
		func() (proto.Message, error) { // forbidden
			return c.CreateProvider(h.project, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "leak", Provider: provider(refused)})
		},
		func() (proto.Message, error) { // unauthenticated
			return c.UpdateProvider(h.anon, &configv1.UpdateProviderRequest{
				Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Credential: refused}, UpdateMask: mask("credential")})
		},
		func() (proto.Message, error) { // invalid URL
			p := provider(refused)
			p.BaseUrl = "https://user:" + refused + "@api.example.com"
			return c.CreateProvider(h.admin, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "leak", Provider: p})
		},
		func() (proto.Message, error) { // invalid credential
			return c.CreateProvider(h.admin, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "leak", Provider: provider(refused + " \n")})
		},
		func() (proto.Message, error) { // already exists
			return c.CreateProvider(h.admin, &configv1.CreateProviderRequest{Parent: "orgs/acme", ProviderId: "openai", Provider: provider(refused)})
		},
		func() (proto.Message, error) { // missing organization
			return c.CreateProvider(h.admin, &configv1.CreateProviderRequest{Parent: "orgs/nope", ProviderId: "leak", Provider: provider(refused)})
		},
		func() (proto.Message, error) { // output-only field in the mask
			return c.UpdateProvider(h.admin, &configv1.UpdateProviderRequest{
				Provider: &configv1.Provider{Name: "orgs/acme/providers/openai", Credential: refused}, UpdateMask: mask("credential", "has_credential")})
		},
	}
	for i, f := range failures {
		m, err := f()
		if err == nil {
			t.Errorf("failure path %d succeeded", i)
		}
		record(m, err)
	}

	// Gateways get the current credential sealed, bound to the provider.
	stream, err := c.WatchConfig(h.internal, &configv1.WatchConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	record(snap, nil)
	var sealed *configv1.SealedSecret
	for _, r := range snap.GetSnapshot().GetResources() {
		if p := r.GetProvider(); p != nil {
			sealed = p.GetCredential()
			if p.GetProvider().GetCredential() != "" {
				t.Error("WatchConfig provider carries a plaintext credential")
			}
		}
	}
	s := secretbox.Sealed{KEKID: sealed.GetKekId(), WrappedKey: sealed.GetWrappedKey(), Ciphertext: sealed.GetCiphertext()}
	if pt, err := h.keyring.Open(s, []byte("orgs/acme/providers/openai")); err != nil || string(pt) != updated {
		t.Errorf("sealed credential opens to %q, %v; want the updated credential", pt, err)
	}
	if _, err := h.keyring.Open(s, []byte("orgs/acme/providers/other")); err == nil {
		t.Error("sealed credential opens for another provider")
	}

	scan := func(where, text string) {
		t.Helper()
		for _, sec := range secrets {
			for _, form := range []string{sec, hex.EncodeToString([]byte(sec)), base64.StdEncoding.EncodeToString([]byte(sec)), base64.RawURLEncoding.EncodeToString([]byte(sec))} {
				if strings.Contains(text, form) {
					t.Errorf("a provider credential appears in %s", where)
					return
				}
			}
		}
	}
	for i, s := range seen {
		scan(fmt.Sprintf("response %d", i), s)
	}
	scan("the logs", h.logs.String())
	for table, rows := range dumpDatabase(t, h) {
		scan("table "+table, rows)
	}
}

// dumpDatabase returns the text of every row of every table.
func dumpDatabase(t *testing.T, h *harness) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := h.pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 6 {
		t.Fatalf("found tables %v, want the config and event tables", tables)
	}
	out := map[string]string{}
	for _, table := range tables {
		rows, err := h.pool.Query(ctx, fmt.Sprintf(`SELECT t::text FROM %s t`, pgx.Identifier{table}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out[table] = strings.Join(texts, "\n")
	}
	if !strings.Contains(out["providers"], "k1") {
		t.Error("the providers table holds no sealed credential: the dump proves nothing")
	}
	return out
}
