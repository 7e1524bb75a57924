package authn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Follow keeps ix in step with identity's key-index stream until ctx ends,
// and returns nil then. Each connection starts with a full snapshot, so a
// reconnect after an outage converges at once; while identity is away the
// index keeps its last state (keys keep working, revocations wait).
func Follow(ctx context.Context, client identityv1.IdentityServiceClient, ix *Index, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		got, err := followOnce(ctx, client, ix)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff.reset()
		}
		wait := backoff.next()
		log.Warn("key index stream ended; reconnecting", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// followOnce reads one stream; got reports whether a snapshot arrived.
func followOnce(ctx context.Context, client identityv1.IdentityServiceClient, ix *Index) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchKeyIndex(ctx, &identityv1.WatchKeyIndexRequest{})
	if err != nil {
		return false, fmt.Errorf("watch key index: %w", err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			return got, err
		}
		switch ev := resp.GetEvent().(type) {
		case *identityv1.WatchKeyIndexResponse_Snapshot:
			ix.Replace(resp.GetVersion(), ev.Snapshot.GetEntries(), ev.Snapshot.GetMemberships()...)
			got = true
		case *identityv1.WatchKeyIndexResponse_Upsert:
			ix.Upsert(resp.GetVersion(), ev.Upsert)
		case *identityv1.WatchKeyIndexResponse_RemoveKeyId:
			ix.Remove(resp.GetVersion(), ev.RemoveKeyId)
		case *identityv1.WatchKeyIndexResponse_UpsertMembership:
			ix.UpsertMembership(resp.GetVersion(), ev.UpsertMembership)
		case *identityv1.WatchKeyIndexResponse_RemoveMembership:
			ix.RemoveMembership(resp.GetVersion(), ev.RemoveMembership)
		}
	}
}

type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, cur: lo} }

func (b *backoff) reset() { b.cur = b.min }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d
}
