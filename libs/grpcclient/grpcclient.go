// Package grpcclient dials Moat's in-cluster gRPC services the same way
// from every caller: traced, with keepalive so a dead peer is noticed on a
// long-lived watch stream, and with the internal token attached when the
// caller has one.
package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/moat-ai/moat/libs/telemetry"
)

// InternalTokenKey is the metadata key of the internal token.
const InternalTokenKey = "x-moat-internal-token" //nolint:gosec // a metadata key, not a credential

// Dial returns a client connection to target (host:port). It connects
// lazily and reconnects by itself. When token is not empty it is sent as
// InternalTokenKey metadata on every call. Transport security is the
// cluster's (a service mesh or NetworkPolicy); TLS comes with the chart.
func Dial(target string, tel *telemetry.Telemetry, token string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if target == "" {
		return nil, errors.New("dial: empty target")
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: false}),
	}
	if tel != nil {
		base = append(base, grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tel.TracerProvider),
			otelgrpc.WithMeterProvider(tel.MeterProvider),
			otelgrpc.WithPropagators(tel.Propagator),
		)))
	}
	if token != "" {
		base = append(base, grpc.WithPerRPCCredentials(internalToken(token)))
	}
	conn, err := grpc.NewClient(target, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return conn, nil
}

// internalToken attaches the token to every call. It does not require
// transport security: in-cluster traffic is plaintext gRPC until the chart
// adds mTLS, and the token is only a shared secret against stray callers.
type internalToken string

func (t internalToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{InternalTokenKey: string(t)}, nil
}

func (internalToken) RequireTransportSecurity() bool { return false }
