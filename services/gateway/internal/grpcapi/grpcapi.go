// Package grpcapi serves the gateway's own admin API (moat.gateway.v1
// GatewayService) over gRPC, and over REST through grpc-gateway: the
// methods only the gateway can serve, because only it holds the provider
// adapters, the opened credentials and the egress policy.
package grpcapi

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/moat-ai/moat/libs/authn"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
)

// Tester tests providers; *gateway.Gateway is one.
type Tester interface {
	TestProvider(ctx context.Context, name, model string) (gateway.TestResult, error)
}

// Server implements gatewayv1.GatewayServiceServer.
type Server struct {
	gatewayv1.UnimplementedGatewayServiceServer
	t Tester
}

// New returns the server over t.
func New(t Tester) *Server { return &Server{t: t} }

// classes maps the domain's classes to the API's.
var classes = map[gateway.ErrorClass]gatewayv1.TestProviderResponse_ErrorClass{
	gateway.TestOK:            gatewayv1.TestProviderResponse_ERROR_CLASS_UNSPECIFIED,
	gateway.TestCredential:    gatewayv1.TestProviderResponse_ERROR_CLASS_CREDENTIAL,
	gateway.TestRetryable:     gatewayv1.TestProviderResponse_ERROR_CLASS_RETRYABLE,
	gateway.TestRequest:       gatewayv1.TestProviderResponse_ERROR_CLASS_REQUEST,
	gateway.TestUnreachable:   gatewayv1.TestProviderResponse_ERROR_CLASS_UNREACHABLE,
	gateway.TestTimeout:       gatewayv1.TestProviderResponse_ERROR_CLASS_TIMEOUT,
	gateway.TestBlocked:       gatewayv1.TestProviderResponse_ERROR_CLASS_BLOCKED,
	gateway.TestConfiguration: gatewayv1.TestProviderResponse_ERROR_CLASS_CONFIGURATION,
	gateway.TestProtocol:      gatewayv1.TestProviderResponse_ERROR_CLASS_PROTOCOL,
}

// TestProvider tests a provider of an organization its admin administers.
func (s *Server) TestProvider(ctx context.Context, req *gatewayv1.TestProviderRequest) (*gatewayv1.TestProviderResponse, error) {
	name := req.GetName()
	if err := authn.Require(ctx, name, identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, toStatus(err)
	}
	if parts := strings.Split(name, "/"); len(parts) != 4 || parts[0] != "orgs" || parts[2] != "providers" || parts[1] == "" || parts[3] == "" {
		return nil, status.Error(codes.InvalidArgument, "name: must be orgs/{org}/providers/{provider}")
	}
	if len(req.GetModel()) > 256 {
		return nil, status.Error(codes.InvalidArgument, "model: must be at most 256 bytes")
	}
	res, err := s.t.TestProvider(ctx, name, req.GetModel())
	if err != nil {
		return nil, toStatus(err)
	}
	return &gatewayv1.TestProviderResponse{
		Success:    res.Class == gateway.TestOK,
		Latency:    durationpb.New(res.Latency),
		ErrorClass: classes[res.Class],
		HttpStatus: int32(res.HTTPStatus), //nolint:gosec // an HTTP status fits
		Message:    res.Message,
		Model:      res.Model,
		WireApi:    res.API.String(),
	}, nil
}

// toStatus is the only place the gateway's admin errors become gRPC
// statuses.
func toStatus(err error) error {
	switch {
	case errors.Is(err, authn.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "authentication required")
	case errors.Is(err, authn.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, authn.DeniedMessage)
	case errors.Is(err, gateway.ErrNoProvider):
		// The same answer whether the provider is in another
		// organization or nowhere: Require has admitted the caller to
		// the organization the name claims.
		return status.Error(codes.NotFound, "provider not found (or not yet in the gateway's configuration)")
	case errors.Is(err, gateway.ErrNoModel):
		return status.Error(codes.FailedPrecondition, err.Error())
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
