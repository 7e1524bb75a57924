package pg_test

import (
	"context"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
)

func TestNotifierWakesSubscribersAndSurvivesReconnect(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDatabase(t, testMigrations(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := pg.NewNotifier(pool, "test_changes", nil)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	a, cancelA := n.Subscribe()
	defer cancelA()
	b, cancelB := n.Subscribe()
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up for %s within 5s", what)
		}
	}
	wait(a, "a after LISTEN") // the initial wake-up after listening
	wait(b, "b after LISTEN")
	cancelB()

	if _, err := pool.Exec(ctx, "SELECT pg_notify('test_changes', '')"); err != nil {
		t.Fatal(err)
	}
	wait(a, "a after NOTIFY")
	select {
	case <-b:
		t.Error("unsubscribed channel was woken")
	case <-time.After(100 * time.Millisecond):
	}

	// Kill the listening session: the notifier reconnects and wakes everyone.
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	wait(a, "a after reconnect")
	if _, err := pool.Exec(ctx, "SELECT pg_notify('test_changes', '')"); err != nil {
		t.Fatal(err)
	}
	wait(a, "a after NOTIFY on the new session")

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
