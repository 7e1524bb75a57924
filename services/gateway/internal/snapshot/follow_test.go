package snapshot_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/grpcclient"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
)

const internalToken = "internal-token-for-tests"

// fakeConfig is config's WatchConfig: a snapshot on every connection, then
// the changes a test sends.
type fakeConfig struct {
	configv1.UnimplementedConfigServiceServer
	snapshot    atomic.Pointer[configv1.WatchConfigResponse]
	changes     chan *configv1.WatchConfigResponse
	connections atomic.Int32
}

func (f *fakeConfig) WatchConfig(_ *configv1.WatchConfigRequest, stream grpc.ServerStreamingServer[configv1.WatchConfigResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if got := md.Get(grpcclient.InternalTokenKey); len(got) != 1 || got[0] != internalToken {
		return status.Error(codes.Unauthenticated, "internal token required")
	}
	f.connections.Add(1)
	if err := stream.Send(f.snapshot.Load()); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case c := <-f.changes:
			if err := stream.Send(c); err != nil {
				return err
			}
		}
	}
}

func snapshotMsg(version int64, resources ...*configv1.ConfigResource) *configv1.WatchConfigResponse {
	return &configv1.WatchConfigResponse{Version: version, Event: &configv1.WatchConfigResponse_Snapshot{
		Snapshot: &configv1.ConfigSnapshot{Resources: resources},
	}}
}

// serveConfig serves f on addr ("" for a free port) until the returned
// stop is called or the test ends.
func serveConfig(t *testing.T, f *fakeConfig, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	configv1.RegisterConfigServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFollow(t *testing.T) {
	t.Parallel()
	k := keyring(t)
	base := []*configv1.ConfigResource{
		orgRes("orgs/a"), projectRes("orgs/a/projects/p"),
		providerRes(t, k, "orgs/a/providers/x", "http://127.0.0.1:9/v1", ""),
	}
	const p = "orgs/a/projects/p"
	fake := &fakeConfig{changes: make(chan *configv1.WatchConfigResponse)}
	fake.snapshot.Store(snapshotMsg(1, append(base, routeRes(p+"/routes/r1", "m1", "orgs/a/providers/x"))...))
	addr, stop := serveConfig(t, fake, "")

	conn, err := grpcclient.Dial(addr, nil, internalToken)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := snapshot.NewStore(k, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- snapshot.Follow(ctx, configv1.NewConfigServiceClient(conn), st, nil) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Follow = %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Follow did not return within 10s of cancel")
		}
	}()

	has := func(model string) func() bool {
		return func() bool { _, ok := st.Load().Route(p, model); return ok }
	}
	eventually(t, 5*time.Second, "the snapshot is loaded", func() bool { return st.Ready() && has("m1")() })
	if a, ok := st.Fresh.Age(time.Now()); !ok || a != 0 {
		t.Errorf("Fresh.Age while connected = %v, %v; want 0, true", a, ok)
	}

	send := func(m *configv1.WatchConfigResponse) {
		select {
		case fake.changes <- m:
		case <-time.After(5 * time.Second):
			t.Fatal("the stream did not take a change within 5s")
		}
	}
	send(&configv1.WatchConfigResponse{Version: 2, Event: &configv1.WatchConfigResponse_Upsert{Upsert: routeRes(p+"/routes/r2", "m2", "orgs/a/providers/x")}})
	eventually(t, 5*time.Second, "the upserted route is in force", has("m2"))
	send(&configv1.WatchConfigResponse{Version: 3, Event: &configv1.WatchConfigResponse_DeleteName{DeleteName: p + "/routes/r1"}})
	eventually(t, 5*time.Second, "the deleted route is gone", func() bool { return !has("m1")() })

	// config goes away: the last good snapshot stays in force, and says
	// it is getting old.
	stop()
	eventually(t, 5*time.Second, "the outage is noticed", func() bool { return age(st) > 0 })
	if !st.Ready() || st.Load().Version() != 3 || has("m1")() || !has("m2")() {
		t.Errorf("during the outage: Ready() = %v, Version() = %d; want the last snapshot (v3: m2, not m1) in force", st.Ready(), st.Load().Version())
	}

	// config comes back, with a configuration that changed meanwhile: the
	// reconnect brings a fresh snapshot that replaces everything.
	fake.snapshot.Store(snapshotMsg(9, append(base, routeRes(p+"/routes/r9", "m9", "orgs/a/providers/x"))...))
	serveConfig(t, fake, addr)
	eventually(t, 10*time.Second, "the fresh snapshot after reconnecting", func() bool { return has("m9")() && !has("m2")() })
	if v := st.Load().Version(); v != 9 {
		t.Errorf("Version() after reconnect = %d, want 9", v)
	}
	eventually(t, 5*time.Second, "freshness is back to zero", func() bool { return age(st) == 0 })
	if n := fake.connections.Load(); n != 2 {
		t.Errorf("connections = %d, want 2", n)
	}
}

func age(st *snapshot.Store) time.Duration {
	a, _ := st.Fresh.Age(time.Now())
	return a
}

// A gateway without the internal token gets nothing, and keeps retrying.
func TestFollowRefused(t *testing.T) {
	t.Parallel()
	fake := &fakeConfig{changes: make(chan *configv1.WatchConfigResponse)}
	fake.snapshot.Store(snapshotMsg(1))
	addr, _ := serveConfig(t, fake, "")
	conn, err := grpcclient.Dial(addr, nil, "wrong-token")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := snapshot.NewStore(keyring(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := snapshot.Follow(ctx, configv1.NewConfigServiceClient(conn), st, nil); err != nil {
		t.Fatalf("Follow = %v, want nil when its context ends", err)
	}
	if st.Ready() || fake.connections.Load() != 0 {
		t.Errorf("Ready() = %v with %d accepted connections; want false, 0", st.Ready(), fake.connections.Load())
	}
}
