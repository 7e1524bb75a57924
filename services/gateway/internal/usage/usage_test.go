package usage_test

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	"github.com/moat-ai/moat/services/gateway/internal/usage"
)

var stream = events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}}

func record(i int) (uuid.UUID, *gatewayv1.UsageRecorded) {
	id := uuid.Must(uuid.NewV7())
	return id, &gatewayv1.UsageRecorded{RequestId: id.String(), Project: "orgs/a/projects/p", InputTokens: int64(i), HttpStatus: 200}
}

// run starts p and returns a function that ends its context and waits for
// Run to return.
func run(t *testing.T, p *usage.Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return within 20s of its context ending")
		}
	}
	t.Cleanup(stop)
	return stop
}

// published reads every usage message of the stream, in order, as event
// id -> input tokens, checking that ids agree.
func published(t *testing.T, js jetstream.JetStream, want int) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream.Name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{usage.Subject}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for len(got) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), want, err)
		}
		var u gatewayv1.UsageRecorded
		if err := proto.Unmarshal(msg.Data(), &u); err != nil {
			t.Fatal(err)
		}
		if id := msg.Headers().Get(jetstream.MsgIDHeader); id != u.GetRequestId() || msg.Headers().Get(events.HeaderID) != id {
			t.Errorf("Nats-Msg-Id %q, ce-id %q, request id %q: want all equal", id, msg.Headers().Get(events.HeaderID), u.GetRequestId())
		}
		got[u.GetRequestId()] = u.GetInputTokens()
	}
	return got
}

func TestPublish(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	if _, err := events.EnsureStream(context.Background(), js, stream); err != nil {
		t.Fatal(err)
	}
	p, err := usage.New(js, usage.Options{Publishers: 3, Drain: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	want := map[string]int64{}
	for i := range 50 {
		id, msg := record(i)
		if !p.Record(context.Background(), id, msg) {
			t.Fatalf("Record %d refused with an empty queue", i)
		}
		want[id.String()] = int64(i)
	}
	if diff := cmp.Diff(want, published(t, js, len(want))); diff != "" {
		t.Errorf("published events mismatch (-want +got):\n%s", diff)
	}
}

// Record never blocks: with the queue full, a record is dropped at once.
func TestRecordDropsWhenFull(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	p, err := usage.New(js, usage.Options{QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing leaves the queue.
	var got []bool
	start := time.Now()
	for i := range 3 {
		id, msg := record(i)
		got = append(got, p.Record(context.Background(), id, msg))
	}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Errorf("Record results mismatch (-want +got):\n%s", diff)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("three Records took %v, want no blocking", d)
	}
}

// Claims keep a place for every served request: Reserve refuses once the
// queued records and the claims fill the queue, and a record made under a
// claim is never dropped.
func TestReserve(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	p, err := usage.New(js, usage.Options{QueueSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	// Not running: nothing leaves the queue.
	id, msg := record(0)
	if !p.Record(context.Background(), id, msg) {
		t.Fatal("Record into an empty queue failed")
	}
	got := []bool{p.Reserve(), p.Reserve(), p.Reserve()}
	if diff := cmp.Diff([]bool{true, true, false}, got); diff != "" {
		t.Fatalf("Reserve results mismatch (-want +got):\n%s", diff)
	}
	for i := 1; i <= 2; i++ {
		id, msg := record(i)
		if !p.Record(context.Background(), id, msg) {
			t.Errorf("a record under a claim was dropped")
		}
		p.Release()
	}
	if p.Reserve() {
		t.Error("Reserve succeeded on a full queue")
	}
}

// While NATS is down the publishers retry with the same event id; what was
// recorded before and during the outage arrives once NATS is back, once.
func TestRetriesAcrossOutage(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	nc, js, err := events.Connect(ns.ClientURL(), "usage-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := events.EnsureStream(context.Background(), js, stream); err != nil {
		t.Fatal(err)
	}
	p, err := usage.New(js, usage.Options{Publishers: 2, Drain: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)

	ns.Shutdown()
	ns.WaitForShutdown()
	want := map[string]int64{}
	for i := range 5 {
		id, msg := record(i)
		p.Record(context.Background(), id, msg)
		want[id.String()] = int64(i)
	}
	ns.Restart(t)
	if diff := cmp.Diff(want, published(t, js, len(want))); diff != "" {
		t.Errorf("published events mismatch (-want +got):\n%s", diff)
	}
	info, err := js.Stream(context.Background(), stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	if si, err := info.Info(context.Background()); err != nil || si.State.Msgs != uint64(len(want)) {
		t.Errorf("stream holds %v messages (%v), want %d: no duplicates", si.State.Msgs, err, len(want))
	}
}

// At shutdown the queue is drained: records made just before (or while the
// HTTP server drains) are published before Run returns.
func TestDrainOnShutdown(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	if _, err := events.EnsureStream(context.Background(), js, stream); err != nil {
		t.Fatal(err)
	}
	p, err := usage.New(js, usage.Options{Publishers: 1, Drain: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	want := map[string]int64{}
	for i := range 200 {
		id, msg := record(i)
		p.Record(context.Background(), id, msg)
		want[id.String()] = int64(i)
	}
	stop() // returns once the queue is empty
	if diff := cmp.Diff(want, published(t, js, len(want))); diff != "" {
		t.Errorf("published events mismatch (-want +got):\n%s", diff)
	}
	id, msg := record(0)
	if p.Record(context.Background(), id, msg) {
		t.Error("Record after Run returned = true, want the record refused")
	}
}

// Shutdown is bounded: with NATS down, Run gives up after the drain time.
func TestDrainDeadline(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	nc, js, err := events.Connect(ns.ClientURL(), "usage-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := usage.New(js, usage.Options{Publishers: 1, Drain: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	ns.Shutdown()
	ns.WaitForShutdown()
	for i := range 3 {
		id, msg := record(i)
		p.Record(context.Background(), id, msg)
	}
	start := time.Now()
	stop()
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Run took %v to return after cancellation, want about the 300ms drain (plus one publish timeout)", d)
	}
}

// lossyJetStream stores every publish, but reports the first attempt of
// each event as failed once the stream has answered it: the PubAck lost on
// its way back, the case retries under the same id exist for.
type lossyJetStream struct {
	jetstream.JetStream
	mu       sync.Mutex
	attempts map[string]int
}

func (l *lossyJetStream) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	ack, err := l.JetStream.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	id := m.Header.Get(jetstream.MsgIDHeader)
	l.attempts[id]++
	first := l.attempts[id] == 1
	l.mu.Unlock()
	if !first {
		return ack, nil
	}
	lost := make(chan error, 1)
	go func() {
		var err error
		select {
		case <-ack.Ok():
		case err = <-ack.Err():
		}
		lost <- errors.Join(errors.New("ack lost"), err)
	}()
	return lostAck{PubAckFuture: ack, err: lost}, nil
}

type lostAck struct {
	jetstream.PubAckFuture
	err chan error
}

func (lostAck) Ok() <-chan *jetstream.PubAck { return nil }
func (a lostAck) Err() <-chan error          { return a.err }

// An event whose ack is lost is sent again under its id, and the stream
// keeps one copy: every event is attempted twice and stored once.
func TestRetryAfterLostAckStoresOnce(t *testing.T) {
	t.Parallel()
	ns := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, ns)
	if _, err := events.EnsureStream(context.Background(), js, stream); err != nil {
		t.Fatal(err)
	}
	lossy := &lossyJetStream{JetStream: js, attempts: map[string]int{}}
	p, err := usage.New(lossy, usage.Options{Publishers: 2, BatchSize: 8, Drain: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, p)
	want := map[string]int64{}
	wantAttempts := map[string]int{}
	for i := range 40 {
		id, msg := record(i)
		if !p.Record(context.Background(), id, msg) {
			t.Fatalf("Record %d refused with an empty queue", i)
		}
		want[id.String()] = int64(i)
		wantAttempts[id.String()] = 2
	}
	if diff := cmp.Diff(want, published(t, js, len(want))); diff != "" {
		t.Errorf("published events mismatch (-want +got):\n%s", diff)
	}
	stop() // returns once the retries are acknowledged too
	s, err := js.Stream(context.Background(), stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	if si, err := s.Info(context.Background()); err != nil || si.State.Msgs != uint64(len(want)) {
		t.Errorf("stream holds %v messages (%v), want %d: no duplicates", si.State.Msgs, err, len(want))
	}
	lossy.mu.Lock()
	defer lossy.mu.Unlock()
	if diff := cmp.Diff(wantAttempts, lossy.attempts); diff != "" {
		t.Errorf("publish attempts per event id mismatch (-want +got):\n%s", diff)
	}
}

// BenchmarkPublish measures the publisher against an in-process JetStream
// with the default options. "burst" queues b.N records at once and times
// until the last is acknowledged: the publisher's throughput. "1000/s"
// records at the rate make bench profiles, where batches stay small; its
// ns/op is the pacing, and cpu-ns/event is what counts. CPU and
// allocations are the whole process's, the NATS server's included, and
// cpu-ns/event includes the pacing; compare runs, not absolute numbers.
// The stream is in memory so that the disk does not set the pace.
func BenchmarkPublish(b *testing.B) {
	b.Run("burst", func(b *testing.B) { benchmarkPublish(b, 0) })
	b.Run("1000/s", func(b *testing.B) { benchmarkPublish(b, time.Millisecond) })
}

func benchmarkPublish(b *testing.B, every time.Duration) {
	ns := eventstest.NewServer(b)
	_, js := eventstest.Connect(b, ns)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: stream.Name, Subjects: stream.Subjects, Storage: jetstream.MemoryStorage,
	}); err != nil {
		b.Fatal(err)
	}
	p, err := usage.New(js, usage.Options{QueueSize: b.N, Drain: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]uuid.UUID, b.N)
	msgs := make([]*gatewayv1.UsageRecorded, b.N)
	for i := range b.N {
		ids[i], msgs[i] = record(i)
	}
	var tick <-chan time.Time
	if every > 0 {
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		tick = ticker.C
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	cpu := cpuTime(b)
	b.ResetTimer()
	go func() { done <- p.Run(ctx) }()
	for i := range b.N {
		if tick != nil {
			<-tick
		}
		if !p.Record(context.Background(), ids[i], msgs[i]) {
			b.Fatal("Record refused with room in the queue")
		}
	}
	cancel() // Run drains the queue, then returns
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/event")

	s, err := js.Stream(context.Background(), stream.Name)
	if err != nil {
		b.Fatal(err)
	}
	if si, err := s.Info(context.Background()); err != nil || si.State.Msgs != uint64(b.N) {
		b.Fatalf("stream holds %v messages (%v), want %d", si.State.Msgs, err, b.N)
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
