package grpcapi

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
)

// WatchConfig implements configv1.ConfigServiceServer: a snapshot of the
// whole configuration, then every change after it in version order, until
// the caller leaves or the server stops. The authentication interceptor
// admits only callers with the internal token (see InternalMethods).
//
// A stream subscribes to change notifications before it reads the
// snapshot, so no change between the two is missed; it also re-reads every
// Recheck, in case a notification was lost. It reads at most Batch changes
// at a time and sends them before reading more, so a slow receiver costs a
// bounded amount of memory (one batch plus gRPC's flow-control window) and
// only makes that stream lag: it catches up by version once the receiver
// reads again.
func (s *Server) WatchConfig(_ *configv1.WatchConfigRequest, stream configv1.ConfigService_WatchConfigServer) error {
	ctx := stream.Context()
	var wake <-chan struct{}
	if s.notify != nil {
		w, cancel := s.notify.Subscribe()
		defer cancel()
		wake = w
	}
	snap, err := s.svc.Snapshot(ctx)
	if err != nil {
		return s.status(ctx, err)
	}
	if err := stream.Send(snapshotOut(snap)); err != nil {
		return err
	}
	last := snap.Version

	tick := time.NewTicker(s.recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "config server shutting down; reconnect")
		case <-wake:
		case <-tick.C:
		}
		for {
			changes, err := s.svc.Changes(ctx, last, s.batch)
			if err != nil {
				if ctx.Err() != nil {
					return status.FromContextError(ctx.Err()).Err()
				}
				// The receiver keeps what it has; the next round retries.
				s.log.WarnContext(ctx, "read configuration changes; will retry", "after_version", last, "err", err)
				break
			}
			for _, c := range changes {
				if err := stream.Send(changeOut(c)); err != nil {
					return err
				}
				last = c.Version
			}
			if len(changes) < s.batch {
				break
			}
		}
	}
}
