package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/moat-ai/moat/libs/grpcclient"
)

// MountREST serves a grpc-gateway mux under /api/ on s.Mux. Its handlers
// call this process's own gRPC server over loopback, so that REST and gRPC
// callers pass the same interceptors (authentication, audit of refusals).
// register attaches the service's generated handlers, e.g.
//
//	func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
//		return configv1.RegisterConfigServiceHandlerClient(ctx, mux, configv1.NewConfigServiceClient(conn))
//	}
func (s *Servers) MountREST(ctx context.Context, register func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error) error {
	mux, err := s.RESTHandler(ctx, register)
	if err != nil {
		return err
	}
	s.Mux.Handle("/api/", mux)
	return nil
}

// RESTHandler is MountREST without the mounting: the grpc-gateway mux, for
// a process that routes /api/ itself (the gateway, whose /api/ proxies to
// the other services but for its own few methods).
func (s *Servers) RESTHandler(ctx context.Context, register func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error) (http.Handler, error) {
	if s.restConn == nil {
		conn, err := grpcclient.Dial(loopback(s.GRPCAddr()), s.tel, "",
			grpc.WithChainUnaryInterceptor(s.proxy.clientUnary),
			grpc.WithChainStreamInterceptor(s.proxy.clientStream),
		)
		if err != nil {
			return nil, fmt.Errorf("dial own gRPC server: %w", err)
		}
		s.restConn = conn
	}
	mux := NewRESTMux()
	if err := register(ctx, mux, s.restConn); err != nil {
		return nil, fmt.Errorf("register REST handlers: %w", err)
	}
	return mux, nil
}

// NewRESTMux returns the grpc-gateway mux every service uses: unknown JSON
// fields are ignored, names are protojson's lowerCamelCase, only an
// allow-list of headers reaches gRPC (Authorization is always forwarded by
// grpc-gateway as `authorization`), and errors are the google.rpc.Status
// JSON {"code", "message", "details"} under the HTTP status of the code.
func NewRESTMux() *runtime.ServeMux {
	return runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}),
		runtime.WithIncomingHeaderMatcher(func(h string) (string, bool) {
			switch strings.ToLower(h) {
			case "x-request-id":
				return "x-request-id", true
			}
			return "", false
		}),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
	)
}

// loopback turns a listen address (possibly a wildcard like [::]:9090)
// into one to dial on this host.
func loopback(addr string) string {
	if strings.HasPrefix(addr, "[::]:") {
		return "127.0.0.1:" + strings.TrimPrefix(addr, "[::]:")
	}
	if strings.HasPrefix(addr, "0.0.0.0:") {
		return "127.0.0.1:" + strings.TrimPrefix(addr, "0.0.0.0:")
	}
	return addr
}

// proxyMark lets the gRPC server trust the client address forwarded by its
// own REST proxy, and no one else's: the proxy's calls carry a random
// per-process token, and only calls bearing it have their x-forwarded-for
// believed.
type proxyMark struct{ token string }

const (
	proxyTokenKey = "x-moat-rest-proxy" //nolint:gosec // a metadata key, not a credential
	forwardedKey  = "x-forwarded-for"
)

func newProxyMark() (proxyMark, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return proxyMark{}, fmt.Errorf("random proxy token: %w", err)
	}
	return proxyMark{token: hex.EncodeToString(b)}, nil
}

func (m proxyMark) clientUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(metadata.AppendToOutgoingContext(ctx, proxyTokenKey, m.token), method, req, reply, cc, opts...)
}

func (m proxyMark) clientStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(metadata.AppendToOutgoingContext(ctx, proxyTokenKey, m.token), desc, cc, method, opts...)
}

type callerKey struct{}

func (m proxyMark) caller(ctx context.Context) context.Context {
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		tok := md.Get(proxyTokenKey)
		fwd := md.Get(forwardedKey)
		if len(tok) == 1 && subtle.ConstantTimeCompare([]byte(tok[0]), []byte(m.token)) == 1 && len(fwd) > 0 {
			addr = strings.Join(fwd, ", ")
		}
	}
	return context.WithValue(ctx, callerKey{}, addr)
}

func (m proxyMark) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(m.caller(ctx), req)
}

func (m proxyMark) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &callerStream{ServerStream: ss, ctx: m.caller(ss.Context())})
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }

// CallerAddress is the client's network address as this server can best
// tell: the X-Forwarded-For chain when the call came through this process's
// own REST proxy (the first entry is the client as the edge saw it), else
// the gRPC peer. Use it in audit records.
func CallerAddress(ctx context.Context) string {
	if a, ok := ctx.Value(callerKey{}).(string); ok {
		return a
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

var _ http.Handler = (*runtime.ServeMux)(nil)
