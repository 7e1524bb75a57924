package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Reconnect backoff: quick enough that a restarted config service is
// followed again within a second or so, slow enough not to hammer one that
// is down.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Follow keeps st in step with config's WatchConfig stream until ctx ends,
// and returns nil then. Every connection starts with a full snapshot, which
// replaces what st held, so a reconnect converges at once; while config is
// away st keeps its last snapshot and st.Fresh reports the outage.
func Follow(ctx context.Context, client configv1.ConfigServiceClient, st *Store, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := minBackoff
	for {
		got, err := followOnce(ctx, client, st)
		st.Fresh.Down(time.Now())
		if ctx.Err() != nil {
			return nil
		}
		if got {
			wait = minBackoff
		}
		// Jitter spreads the reconnects of many gateways after a config
		// restart.
		d := wait/2 + rand.N(wait/2+1) //nolint:gosec // jitter needs no secrecy
		log.Warn("config stream ended; reconnecting", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		wait = min(wait*2, maxBackoff)
	}
}

// followOnce reads one stream; got reports whether a snapshot arrived.
func followOnce(ctx context.Context, client configv1.ConfigServiceClient, st *Store) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchConfig(ctx, &configv1.WatchConfigRequest{})
	if err != nil {
		return false, fmt.Errorf("watch config: %w", err)
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
		case *configv1.WatchConfigResponse_Snapshot:
			st.Replace(resp.GetVersion(), ev.Snapshot.GetResources())
			got = true
		case *configv1.WatchConfigResponse_Upsert:
			if !got {
				return false, errors.New("change before the snapshot")
			}
			st.Upsert(resp.GetVersion(), ev.Upsert)
		case *configv1.WatchConfigResponse_DeleteName:
			if !got {
				return false, errors.New("change before the snapshot")
			}
			st.Delete(resp.GetVersion(), ev.DeleteName)
		default:
			continue // a newer config's message kind; the snapshot covers it
		}
		st.Fresh.Up()
	}
}

// WatchFreshness wraps identity's client so that the key-index stream
// reports its health to f, as Follow does for config's: authn.Follow
// drives the stream, this only watches it.
func WatchFreshness(c identityv1.IdentityServiceClient, f *Freshness) identityv1.IdentityServiceClient {
	return &watchedIdentity{IdentityServiceClient: c, fresh: f}
}

type watchedIdentity struct {
	identityv1.IdentityServiceClient
	fresh *Freshness
}

func (w *watchedIdentity) WatchKeyIndex(ctx context.Context, in *identityv1.WatchKeyIndexRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[identityv1.WatchKeyIndexResponse], error) {
	s, err := w.IdentityServiceClient.WatchKeyIndex(ctx, in, opts...)
	if err != nil {
		w.fresh.Down(time.Now())
		return nil, err
	}
	return &watchedStream{ServerStreamingClient: s, fresh: w.fresh}, nil
}

type watchedStream struct {
	grpc.ServerStreamingClient[identityv1.WatchKeyIndexResponse]
	fresh    *Freshness
	snapshot bool
}

func (s *watchedStream) Recv() (*identityv1.WatchKeyIndexResponse, error) {
	m, err := s.ServerStreamingClient.Recv()
	if err != nil {
		s.fresh.Down(time.Now())
		return nil, err
	}
	if m.GetSnapshot() != nil {
		s.snapshot = true
	}
	if s.snapshot {
		s.fresh.Up()
	}
	return m, nil
}
