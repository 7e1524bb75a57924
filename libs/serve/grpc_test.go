package serve

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testService is a gRPC service written by hand, without generated code:
// Block echoes its request once released, Panic and PanicStream panic.
type testService struct {
	entered chan string   // receives each Block request on entry
	release chan struct{} // closed to let every Block return
}

const (
	methodBlock       = "/moat.test.v1.TestService/Block"
	methodPanic       = "/moat.test.v1.TestService/Panic"
	methodPanicStream = "/moat.test.v1.TestService/PanicStream"
)

func newTestService() *testService {
	return &testService{entered: make(chan string, 16), release: make(chan struct{})}
}

// Block ignores ctx on purpose: it stands for a handler stuck in a call
// that does not honour cancellation, the case a forced stop exists for.
func (s *testService) Block(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	s.entered <- in.GetValue()
	<-s.release
	return wrapperspb.String(in.GetValue()), nil
}

func (s *testService) desc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: "moat.test.v1.TestService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{
				MethodName: "Block",
				Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
					in := new(wrapperspb.StringValue)
					if err := dec(in); err != nil {
						return nil, err
					}
					h := func(ctx context.Context, req any) (any, error) {
						return s.Block(ctx, req.(*wrapperspb.StringValue))
					}
					return ic(ctx, in, &grpc.UnaryServerInfo{Server: s, FullMethod: methodBlock}, h)
				},
			},
			{
				MethodName: "Panic",
				Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
					in := new(emptypb.Empty)
					if err := dec(in); err != nil {
						return nil, err
					}
					h := func(context.Context, any) (any, error) { panic("boom in unary") }
					return ic(ctx, in, &grpc.UnaryServerInfo{Server: s, FullMethod: methodPanic}, h)
				},
			},
		},
		Streams: []grpc.StreamDesc{{
			StreamName:    "PanicStream",
			ServerStreams: true,
			Handler:       func(any, grpc.ServerStream) error { panic("boom in stream") },
		}},
	}
}

// grpcFixture is a served NewGRPCServer with the test service.
type grpcFixture struct {
	svc    *testService
	health *Health
	addr   string
	cancel context.CancelFunc
	done   chan error // GRPC's result
	logs   *syncBuffer
}

func startGRPC(t *testing.T, grace time.Duration) *grpcFixture {
	t.Helper()
	f := &grpcFixture{svc: newTestService(), health: NewHealth(), done: make(chan error, 1), logs: &syncBuffer{}}
	s := NewGRPCServer(newLogger(f.logs), newTelemetry(t), f.health)
	s.RegisterService(f.svc.desc(), f.svc)
	lis := listen(t)
	f.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	f.cancel = cancel
	go func() { f.done <- GRPC(ctx, s, lis, grace) }()
	// Handlers left blocked by a test end with it; cleanups run last-in
	// first-out, so this runs before the fixture's context is canceled.
	t.Cleanup(func() {
		select {
		case <-f.svc.release:
		default:
			close(f.svc.release)
		}
	})
	t.Cleanup(cancel)
	return f
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func grpcHealth(t *testing.T, conn *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Check: %v", err)
	}
	return resp.GetStatus()
}

type callResult struct {
	in, out string
	err     error
}

// startBlockCalls starts n Block calls on conn and waits until every one is
// inside its handler.
func startBlockCalls(t *testing.T, conn *grpc.ClientConn, svc *testService, n int) <-chan callResult {
	t.Helper()
	results := make(chan callResult, n)
	for i := range n {
		in := strconv.Itoa(i)
		go func() {
			out := new(wrapperspb.StringValue)
			err := conn.Invoke(context.Background(), methodBlock, wrapperspb.String(in), out)
			results <- callResult{in: in, out: out.GetValue(), err: err}
		}()
	}
	for range n {
		receive(t, svc.entered, "a Block call to enter its handler")
	}
	return results
}

func TestGRPCGracefulStopCompletesInFlightCalls(t *testing.T) {
	t.Parallel()
	f := startGRPC(t, waitLong)
	conn := dial(t, f.addr)
	if got := grpcHealth(t, conn); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before shutdown = %v, want SERVING", got)
	}

	const n = 4
	results := startBlockCalls(t, conn, f.svc, n)

	// Readiness fails first, while the server still answers.
	f.health.Shutdown()
	if got := grpcHealth(t, conn); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after Health.Shutdown = %v, want NOT_SERVING", got)
	}

	f.cancel()
	eventually(t, waitLong, "new connections to be refused", func() bool { return refused(f.addr) })
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	err := dial(t, f.addr).Invoke(ctx, methodBlock, wrapperspb.String("late"), new(wrapperspb.StringValue))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("call on a new connection after stop: err = %v, want code Unavailable", err)
	}
	select {
	case err := <-f.done:
		t.Fatalf("GRPC returned %v while calls were in flight", err)
	default:
	}

	close(f.svc.release)
	var got []string
	for range n {
		r := receive(t, results, "an in-flight call to finish")
		if r.err != nil {
			t.Errorf("in-flight call %s: %v", r.in, r.err)
			continue
		}
		if r.out != r.in {
			t.Errorf("in-flight call %s returned %q, want its request echoed", r.in, r.out)
		}
		got = append(got, r.out)
	}
	if len(got) != n {
		t.Errorf("%d of %d in-flight calls succeeded", len(got), n)
	}
	if err := receive(t, f.done, "GRPC to return"); err != nil {
		t.Errorf("GRPC = %v, want nil", err)
	}
}

func TestGRPCForcesStopAfterGrace(t *testing.T) {
	t.Parallel()
	const grace = 300 * time.Millisecond
	const margin = time.Second // scheduling slack on a loaded CI machine
	f := startGRPC(t, grace)
	conn := dial(t, f.addr)
	const n = 3
	results := startBlockCalls(t, conn, f.svc, n) // never released

	f.health.Shutdown()
	start := time.Now()
	f.cancel()
	err := receive(t, f.done, "GRPC to return")
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("GRPC = %v, want nil", err)
	}
	if elapsed < grace || elapsed > grace+margin {
		t.Errorf("GRPC returned %v after cancel, want between %v and %v", elapsed, grace, grace+margin)
	}
	for range n {
		r := receive(t, results, "an in-flight call to fail")
		if c := status.Code(r.err); c != codes.Unavailable && c != codes.Canceled {
			t.Errorf("in-flight call %s: err = %v, want code Unavailable or Canceled", r.in, r.err)
		}
	}
	if !refused(f.addr) {
		t.Error("new connection accepted after GRPC returned")
	}
}

func TestGRPCRecoversPanics(t *testing.T) {
	t.Parallel()
	f := startGRPC(t, waitLong)
	conn := dial(t, f.addr)
	tests := []struct {
		name   string
		method string
		call   func(ctx context.Context) error
		panic  string
	}{
		{
			name:   "unary",
			method: methodPanic,
			call: func(ctx context.Context) error {
				return conn.Invoke(ctx, methodPanic, &emptypb.Empty{}, &emptypb.Empty{})
			},
			panic: "boom in unary",
		},
		{
			name:   "stream",
			method: methodPanicStream,
			call: func(ctx context.Context) error {
				st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, methodPanicStream)
				if err != nil {
					return err
				}
				if err := st.SendMsg(&emptypb.Empty{}); err != nil {
					return err
				}
				if err := st.CloseSend(); err != nil {
					return err
				}
				return st.RecvMsg(&emptypb.Empty{})
			},
			panic: "boom in stream",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitLong)
			defer cancel()
			err := tt.call(ctx)
			st, _ := status.FromError(err)
			if st.Code() != codes.Internal || st.Message() != "internal error" {
				t.Errorf("call = %v, want code Internal with message %q", err, "internal error")
			}
			logs := f.logs.String()
			line := logLine(logs, tt.panic)
			if line == "" {
				t.Fatalf("no log line mentions the panic %q; logs:\n%s", tt.panic, logs)
			}
			// trace_id shows the otelgrpc span reaches the interceptor's log.
			for _, want := range []string{`"method":"` + tt.method + `"`, `"stack":"goroutine`, "grpc handler panicked", `"trace_id":"`} {
				if !strings.Contains(line, want) {
					t.Errorf("panic log line lacks %s: %s", want, line)
				}
			}
		})
	}

	// The process survived: ordinary calls still work.
	close(f.svc.release)
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, methodBlock, wrapperspb.String("after"), out); err != nil || out.GetValue() != "after" {
		t.Errorf("call after panics = (%q, %v), want (%q, nil)", out.GetValue(), err, "after")
	}
}

func logLine(logs, substr string) string {
	i := slices.IndexFunc(strings.Split(logs, "\n"), func(l string) bool { return strings.Contains(l, substr) })
	if i < 0 {
		return ""
	}
	return strings.Split(logs, "\n")[i]
}

func TestGRPCReturnsServeError(t *testing.T) {
	t.Parallel()
	lis := listen(t)
	_ = lis.Close() // Serve fails at once on a closed listener
	s := NewGRPCServer(newLogger(&syncBuffer{}), newTelemetry(t), NewHealth())
	err := GRPC(t.Context(), s, lis, time.Second)
	if err == nil {
		t.Fatal("GRPC on a closed listener = nil, want error")
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("GRPC = %v, want it to wrap the listener's *net.OpError", err)
	}
}

func TestGRPCAlreadyCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s := NewGRPCServer(newLogger(&syncBuffer{}), newTelemetry(t), NewHealth())
	if err := GRPC(ctx, s, listen(t), time.Second); err != nil {
		t.Errorf("GRPC with a done context = %v, want nil", err)
	}
}

func TestGRPCReflection(t *testing.T) {
	t.Parallel()
	f := startGRPC(t, waitLong)
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	st, err := reflectionpb.NewServerReflectionClient(dial(t, f.addr)).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("open reflection stream: %v", err)
	}
	req := &reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}
	if err := st.Send(req); err != nil {
		t.Fatalf("send list services: %v", err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("receive list services: %v", err)
	}
	var got []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		got = append(got, svc.GetName())
	}
	for _, want := range []string{"moat.test.v1.TestService", "grpc.health.v1.Health"} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %v, want it to include %s", got, want)
		}
	}
}
