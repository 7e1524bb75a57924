package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Notifier fans PostgreSQL notifications on one channel out to any number
// of subscribers over a single LISTEN connection, so that a hundred gateway
// watch streams cost one database connection, not a hundred.
//
// Wake-ups carry no payload and coalesce: a subscriber learns that
// something changed and reads the changes itself. After the connection is
// re-established every subscriber is woken, because notifications sent in
// between were lost.
type Notifier struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// NewNotifier returns a Notifier for channel; call Run to start it.
func NewNotifier(pool *pgxpool.Pool, channel string, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{pool: pool, channel: channel, log: log, subs: map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives a value after each change (at
// most one pending at a time) and a function that unsubscribes.
func (n *Notifier) Subscribe() (wake <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	n.subs[ch] = struct{}{}
	n.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.subs, ch)
			n.mu.Unlock()
		})
	}
}

func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Run listens until ctx ends, reconnecting after errors, and returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	for {
		err := n.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		n.log.Warn("listen for notifications; reconnecting", "channel", n.channel, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (n *Notifier) listen(ctx context.Context) error {
	conn, err := n.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// A LISTENing session must not go back to the pool.
	defer func() {
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	n.wakeAll() // whatever happened while we were not listening
	for {
		_, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("wait for notification: %w", err)
		}
		n.wakeAll()
	}
}
