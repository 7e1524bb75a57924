// Command demo bootstraps the demo tenant of a local platform through the
// admin API: organization "demo", project "demo", providers "mock" (the
// mock model provider in the OpenAI wire format) and "mock-anthropic" (the
// same mock in Anthropic's), routes "demo-model" and "demo-claude" to
// them, and a project API key. It is
// idempotent: a second run keeps what exists, points the provider at the
// mock's current address, and reuses the key while it still works. It
// writes the client settings to an env file (mode 0600).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

type options struct {
	configAddr, identityAddr string
	adminKeyFile             string
	gatewayURL               string
	mockURL, mockCredential  string
	mockModel                string
	out                      string
}

func main() {
	var o options
	flag.StringVar(&o.configAddr, "config", os.Getenv("MOAT_CONFIG_GRPC"), "config's gRPC address")
	flag.StringVar(&o.identityAddr, "identity", os.Getenv("MOAT_IDENTITY_GRPC"), "identity's gRPC address")
	flag.StringVar(&o.adminKeyFile, "admin-key-file", "", "file holding the platform-admin key")
	flag.StringVar(&o.gatewayURL, "gateway", "", "the gateway's base URL, e.g. http://127.0.0.1:8080")
	flag.StringVar(&o.mockURL, "mock-url", "", "the mock provider's API base URL, e.g. http://127.0.0.1:8090/v1")
	flag.StringVar(&o.mockCredential, "mock-credential", os.Getenv("MOCK_PROVIDER_CREDENTIAL"), "the credential the mock provider expects")
	flag.StringVar(&o.mockModel, "mock-model", "mock-model", "the model name the mock provider serves")
	flag.StringVar(&o.out, "out", "", "where to write the env file")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	for name, v := range map[string]string{"-config": o.configAddr, "-identity": o.identityAddr, "-admin-key-file": o.adminKeyFile,
		"-gateway": o.gatewayURL, "-mock-url": o.mockURL, "-out": o.out} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	raw, err := os.ReadFile(o.adminKeyFile)
	if err != nil {
		return fmt.Errorf("read the platform-admin key: %w", err)
	}
	adminKey := strings.TrimSpace(string(raw))
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminKey)

	cconn, err := grpc.NewClient(o.configAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cconn.Close()
	iconn, err := grpc.NewClient(o.identityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer iconn.Close()
	cfg := configv1.NewConfigServiceClient(cconn)
	ids := identityv1.NewIdentityServiceClient(iconn)

	// Services start in any order: wait until config answers with the
	// admin key accepted (it needs identity's key index first).
	if err := retry(ctx, func() error {
		_, err := cfg.ListOrganizations(ctx, &configv1.ListOrganizationsRequest{PageSize: 1})
		return err
	}); err != nil {
		return fmt.Errorf("config did not accept the admin key: %w", err)
	}

	const org, project = "orgs/demo", "orgs/demo/projects/demo"
	if err := ensure(func() error {
		_, err := cfg.CreateOrganization(ctx, &configv1.CreateOrganizationRequest{OrganizationId: "demo",
			Organization: &configv1.Organization{DisplayName: "Demo"}})
		return err
	}, func() error {
		_, err := cfg.GetOrganization(ctx, &configv1.GetOrganizationRequest{Name: org})
		return err
	}); err != nil {
		return fmt.Errorf("create %s: %w", org, err)
	}
	if err := ensure(func() error {
		_, err := cfg.CreateProject(ctx, &configv1.CreateProjectRequest{Parent: org, ProjectId: "demo",
			Project: &configv1.Project{DisplayName: "Demo project"}})
		return err
	}, func() error {
		_, err := cfg.GetProject(ctx, &configv1.GetProjectRequest{Name: project})
		return err
	}); err != nil {
		return fmt.Errorf("create %s: %w", project, err)
	}
	// Two providers on the one mock: the OpenAI wire format and
	// Anthropic's, so that each client API is served natively by one route
	// and translated by the other.
	for _, d := range []struct {
		provider, route string
		typ             configv1.Provider_Type
	}{
		{"mock", "demo-model", configv1.Provider_TYPE_OPENAI_COMPATIBLE},
		{"mock-anthropic", "demo-claude", configv1.Provider_TYPE_ANTHROPIC},
	} {
		if err := demoRoute(ctx, cfg, o, org, project, d.provider, d.route, d.typ); err != nil {
			return err
		}
	}

	key, err := projectKey(ctx, ids, project, o.out)
	if err != nil {
		return err
	}
	env := fmt.Sprintf(`# Written by e2e/cmd/demo: the demo tenant of the local platform.
# Load with: set -a; . %s; set +a
MOAT_BASE_URL=%s/v1
MOAT_API_KEY=%s
MOAT_ADMIN_KEY=%s
MOAT_ORG=demo
MOAT_PROJECT=demo
`, filepath.Base(o.out), strings.TrimRight(o.gatewayURL, "/"), key, adminKey)
	if err := writePrivate(o.out, env); err != nil {
		return err
	}
	return nil
}

// projectKey reuses the key of a previous run while it is still active,
// and creates one otherwise.
func projectKey(ctx context.Context, ids identityv1.IdentityServiceClient, project, envFile string) (string, error) {
	if old := readEnv(envFile, "MOAT_API_KEY"); old != "" {
		resp, err := ids.ListApiKeys(ctx, &identityv1.ListApiKeysRequest{Parent: project, PageSize: 1000})
		if err != nil {
			return "", fmt.Errorf("list the demo project's keys: %w", err)
		}
		for _, k := range resp.GetApiKeys() {
			if k.GetRevokeTime() == nil && k.GetPrefix() != "" && strings.HasPrefix(old, k.GetPrefix()) {
				return old, nil
			}
		}
	}
	resp, err := ids.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{DisplayName: "demo"}})
	if err != nil {
		return "", fmt.Errorf("create the demo project's key: %w", err)
	}
	return resp.GetKey(), nil
}

// ensure creates a resource unless it exists (get finds it). One that was
// deleted cannot be made again, since config never reuses a deleted id:
// the error says how to start over.
func ensure(create, get func() error) error {
	err := create()
	if status.Code(err) != codes.AlreadyExists {
		return err
	}
	if err := get(); status.Code(err) == codes.NotFound {
		return errors.New("it was deleted, and config never reuses a deleted id: start the local platform from empty databases (MOAT_DB_RESET=1 make run)")
	} else if err != nil {
		return err
	}
	return nil
}

func retry(ctx context.Context, call func() error) error {
	for {
		err := call()
		if err == nil {
			return nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.Unauthenticated {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func readEnv(path, key string) string {
	b, err := os.ReadFile(path) //nolint:gosec // the env file the operator named
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func writePrivate(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil { //nolint:gosec // the env file the operator named
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// demoRoute creates (or points at the mock's current address) the
// provider providerID of type typ and the route routeID to it.
func demoRoute(ctx context.Context, cfg configv1.ConfigServiceClient, o options, org, project, providerID, routeID string, typ configv1.Provider_Type) error {
	provider := &configv1.Provider{Name: org + "/providers/" + providerID, DisplayName: "Mock provider (" + providerID + ")",
		Type: typ, BaseUrl: o.mockURL, Credential: o.mockCredential}
	_, err := cfg.CreateProvider(ctx, &configv1.CreateProviderRequest{Parent: org, ProviderId: providerID, Provider: provider})
	if status.Code(err) == codes.AlreadyExists {
		// The mock may listen elsewhere than last time.
		_, err = cfg.UpdateProvider(ctx, &configv1.UpdateProviderRequest{Provider: provider,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"type", "base_url", "credential"}}})
	}
	if err != nil {
		return fmt.Errorf("configure the provider %s: %w", providerID, err)
	}
	route := &configv1.Route{Name: project + "/routes/" + routeID, Model: routeID, Provider: provider.GetName(), UpstreamModel: o.mockModel}
	_, err = cfg.CreateRoute(ctx, &configv1.CreateRouteRequest{Parent: project, RouteId: routeID, Route: route})
	if status.Code(err) == codes.AlreadyExists {
		_, err = cfg.UpdateRoute(ctx, &configv1.UpdateRouteRequest{Route: route,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"provider", "upstream_model"}}})
	}
	if err != nil {
		return fmt.Errorf("configure route %s: %w", routeID, err)
	}
	return nil
}
