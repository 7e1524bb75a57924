package pg

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// LockOptions tune RunExclusive. Zero values take the defaults.
type LockOptions struct {
	// Retry is how often a waiting replica tries to take the lock (default 2s).
	Retry time.Duration
	// Check is how often the holder verifies that its session is alive
	// (default 5s); a lost session means the lock is gone.
	Check time.Duration
}

// LockKey maps a job name to the advisory lock key used for it.
func LockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64()) //nolint:gosec // a hash reinterpreted as a key; wrapping is intended
}

// RunExclusive runs fn while this process holds the session-level advisory
// lock for name, so that one replica at a time runs a singleton job (the
// outbox relay, a reconciler). It waits until it gets the lock or ctx ends.
//
// The lock lives as long as the database session that took it. RunExclusive
// pings that session while fn runs and cancels fn's context when it breaks,
// because by then another replica may already have taken over. fn returning
// ends the hold; RunExclusive returns fn's error, or ctx's when ctx ended
// while waiting.
func RunExclusive(ctx context.Context, pool *pgxpool.Pool, name string, opts LockOptions, fn func(context.Context) error) error {
	if opts.Retry <= 0 {
		opts.Retry = 2 * time.Second
	}
	if opts.Check <= 0 {
		opts.Check = 5 * time.Second
	}
	key := LockKey(name)
	for {
		conn, held, err := tryLock(ctx, pool, key)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if held {
			return holdAndRun(ctx, conn, key, opts.Check, fn)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(opts.Retry):
		}
	}
}

// tryLock returns a connection holding the lock, or held == false. Errors
// (database down) count as not held: the caller retries.
func tryLock(ctx context.Context, pool *pgxpool.Pool, key int64) (*pgxpool.Conn, bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("acquire connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("try advisory lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return conn, true, nil
}

func holdAndRun(ctx context.Context, conn *pgxpool.Conn, key int64, check time.Duration, fn func(context.Context) error) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	done := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		t := time.NewTicker(check)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, check)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					cancel(fmt.Errorf("advisory lock session lost: %w", err))
					return
				}
			}
		}
	}()

	err := fn(runCtx)
	close(done)
	<-watchDone

	if cause := context.Cause(runCtx); cause != nil && ctx.Err() == nil {
		// The session broke under fn: the lock went with it.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
		return cause
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer ucancel()
	if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", key); uerr != nil {
		// Closing the session releases the lock just as well.
		_ = conn.Conn().Close(uctx)
	}
	conn.Release()
	return err
}
