package grpcapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

// IndexFeeder keeps identity's own authn.Index, which authenticates
// identity's callers, in step with its database. It reads the database
// directly rather than its own WatchKeyIndex stream, so identity needs no
// internal token to call itself and a revoked admin key stops working here
// as fast as on the gateways.
type IndexFeeder struct {
	Service *identity.Service
	Keys    Subscriber
	Index   *authn.Index
	Log     *slog.Logger
	// Recheck is as Server.Recheck; zero means DefaultRecheck.
	Recheck time.Duration
}

// Run feeds the index until ctx ends, and returns nil then. After a
// database error it keeps the index it has (keys keep working, changes
// wait) and starts over from a fresh snapshot.
func (f *IndexFeeder) Run(ctx context.Context) error {
	recheck := f.Recheck
	if recheck <= 0 {
		recheck = DefaultRecheck
	}
	wait := 100 * time.Millisecond
	for {
		wake, unsubscribe := f.Keys.Subscribe()
		sink := &indexSink{ix: f.Index}
		err := f.Service.WatchIndex(ctx, wake, recheck, sink)
		unsubscribe()
		if ctx.Err() != nil {
			return nil
		}
		if sink.loaded {
			wait = 100 * time.Millisecond
		}
		f.Log.Warn("refresh key index; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// indexSink applies the key index to an authn.Index.
type indexSink struct {
	ix     *authn.Index
	loaded bool
}

func (x *indexSink) Snapshot(version int64, keys []identity.Key, members []identity.Member) error {
	snap := toSnapshot(keys, members)
	x.ix.Replace(version, snap.GetEntries(), snap.GetMemberships()...)
	x.loaded = true
	return nil
}

func (x *indexSink) Member(m identity.Member) error {
	if m.Active() {
		x.ix.UpsertMembership(m.Version, toMembershipEntry(m))
	} else {
		x.ix.RemoveMembership(m.Version, toMembershipEntry(m))
	}
	return nil
}

func (x *indexSink) Upsert(k identity.Key) error {
	x.ix.Upsert(k.Version, toEntry(k))
	return nil
}

func (x *indexSink) Remove(version int64, id string) error {
	x.ix.Remove(version, id)
	return nil
}
