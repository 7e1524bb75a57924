package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/moat-ai/moat/libs/authn"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/grpcapi"
	"github.com/moat-ai/moat/services/gateway/internal/wire"
)

type fakeTester struct{ calls []string }

func (f *fakeTester) TestProvider(_ context.Context, name, model string) (gateway.TestResult, error) {
	f.calls = append(f.calls, name)
	if name == "orgs/acme/providers/gone" {
		return gateway.TestResult{}, gateway.ErrNoProvider
	}
	return gateway.TestResult{Class: gateway.TestCredential, Latency: 3 * time.Millisecond, HTTPStatus: 401,
		Message: "the provider answered Unauthorized", Model: "m", API: wire.OpenAIChat}, nil
}

// Only admins of the provider's organization (and platform admins) test
// it; the outcome maps field by field.
func TestTestProvider(t *testing.T) {
	t.Parallel()
	user := func(roles map[string]identityv1.OrgRole) context.Context {
		return authn.NewContext(context.Background(), authn.Principal{Kind: authn.KindUser, Subject: "u1", Roles: roles})
	}
	admin := user(map[string]identityv1.OrgRole{"orgs/acme": identityv1.OrgRole_ORG_ROLE_ADMIN})
	tests := []struct {
		name string
		ctx  context.Context
		req  string
		want codes.Code
	}{
		{"org admin", admin, "orgs/acme/providers/openai", codes.OK},
		{"no principal", context.Background(), "orgs/acme/providers/openai", codes.Unauthenticated},
		{"member", user(map[string]identityv1.OrgRole{"orgs/acme": identityv1.OrgRole_ORG_ROLE_MEMBER}), "orgs/acme/providers/openai", codes.PermissionDenied},
		{"admin of another org", admin, "orgs/other/providers/openai", codes.PermissionDenied},
		{"malformed name", admin, "orgs/acme/providers", codes.InvalidArgument},
		{"malformed name in the org", admin, "orgs/acme/routes/x", codes.InvalidArgument},
		{"unknown provider", admin, "orgs/acme/providers/gone", codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := grpcapi.New(&fakeTester{})
			res, err := s.TestProvider(tt.ctx, &gatewayv1.TestProviderRequest{Name: tt.req})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("TestProvider(%s) = %v, want %v", tt.req, err, tt.want)
			}
			if tt.want != codes.OK {
				return
			}
			want := &gatewayv1.TestProviderResponse{Latency: durationpb.New(3 * time.Millisecond), HttpStatus: 401,
				ErrorClass: gatewayv1.TestProviderResponse_ERROR_CLASS_CREDENTIAL, Message: "the provider answered Unauthorized", Model: "m", WireApi: "openai.chat"}
			if diff := cmp.Diff(want, res, protocmp.Transform()); diff != "" {
				t.Errorf("response mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
