package serve

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const methodWhoAmI = "/moat.test.v1.AddrService/WhoAmI"

// whoAmIDesc serves WhoAmI, which answers CallerAddress, or NotFound for
// the request "missing".
func whoAmIDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "moat.test.v1.AddrService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "WhoAmI",
			Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					if req.(*wrapperspb.StringValue).GetValue() == "missing" {
						return nil, status.Error(codes.NotFound, "no such thing")
					}
					return wrapperspb.String(CallerAddress(ctx)), nil
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: methodWhoAmI}, h)
			},
		}},
	}
}

// The REST proxy reaches the process's own gRPC server through the
// interceptors added with Use, the client address it forwards is believed,
// a gRPC caller's forged x-forwarded-for is not, and errors come back as
// google.rpc.Status JSON under the matching HTTP status.
func TestMountREST(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	s, err := NewServers(newLogger(logs), newTelemetry(t), Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var intercepted atomic.Int32
	s.Use(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == methodWhoAmI {
			intercepted.Add(1)
		}
		return h(ctx, req)
	}, nil)
	s.GRPC.RegisterService(whoAmIDesc(), struct{}{})
	ctx, cancel := context.WithCancel(context.Background())
	err = s.MountREST(ctx, func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		return mux.HandlePath(http.MethodGet, "/api/v1/whoami/{q}", func(w http.ResponseWriter, r *http.Request, p map[string]string) {
			actx, err := runtime.AnnotateContext(r.Context(), mux, r, methodWhoAmI, runtime.WithHTTPPathPattern("/api/v1/whoami/{q}"))
			if err != nil {
				runtime.HTTPError(r.Context(), mux, &runtime.JSONPb{}, w, r, err)
				return
			}
			out := new(wrapperspb.StringValue)
			if err := conn.Invoke(actx, methodWhoAmI, wrapperspb.String(p["q"]), out); err != nil {
				runtime.HTTPError(actx, mux, &runtime.JSONPb{}, w, r, err)
				return
			}
			_, _ = io.WriteString(w, out.GetValue())
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.HTTPAddr()+path, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/api/v1/whoami/me")
	if code != http.StatusOK || !strings.HasPrefix(body, "203.0.113.9, 127.0.0.1") {
		t.Errorf("GET via REST = %d %q, want 200 and the forwarded chain starting at the client", code, body)
	}
	if intercepted.Load() != 1 {
		t.Errorf("interceptor saw %d REST calls, want 1", intercepted.Load())
	}

	code, body = get("/api/v1/whoami/missing")
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusNotFound || st.Code != int(codes.NotFound) || st.Message != "no such thing" {
		t.Errorf("error via REST = %d %q, want 404 with {code: 5, message}", code, body)
	}

	// A direct gRPC caller cannot forge its address.
	conn := dial(t, s.GRPCAddr())
	out := new(wrapperspb.StringValue)
	fctx := metadata.AppendToOutgoingContext(context.Background(), "x-forwarded-for", "198.51.100.1", proxyTokenKey, "guess")
	if err := conn.Invoke(fctx, methodWhoAmI, wrapperspb.String("me"), out); err != nil {
		t.Fatal(err)
	}
	if got := out.GetValue(); strings.Contains(got, "198.51.100.1") || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("CallerAddress for a forged header = %q, want the peer address", got)
	}
}
