package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultDuplicates is the dedupe window of Moat's streams. It must outlast
// the longest time a producer may retry one event (the outbox relay during a
// NATS outage, the gateway's spool replay): JetStream's default of two
// minutes does not. Consumers dedupe by event id as well, so an event
// republished after the window is still applied once.
const DefaultDuplicates = 10 * time.Minute

// StreamConfig describes a stream owned by one producing service.
type StreamConfig struct {
	// Name is the service name in capitals, e.g. CONFIG.
	Name string
	// Subjects are the stream's subjects, e.g. config.>.
	Subjects []string
	// Replicas is 1 locally and 3 in a clustered install.
	Replicas int
	// MaxBytes bounds the stream; 0 means unlimited. Publishers get an
	// error when it is full (discard: new): unconsumed money and audit
	// events are never dropped.
	MaxBytes int64
	// MaxAge bounds how long messages are kept; 0 means forever.
	MaxAge time.Duration
	// Duplicates is the dedupe window; 0 means DefaultDuplicates.
	Duplicates time.Duration
}

// EnsureStream creates the stream or updates it to cfg. Producers call it at
// start (and the relay before publishing), so it is idempotent.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" || len(cfg.Subjects) == 0 {
		return nil, errors.New("stream needs a name and subjects")
	}
	dup := cfg.Duplicates
	if dup == 0 {
		dup = DefaultDuplicates
	}
	if cfg.MaxAge > 0 && dup > cfg.MaxAge {
		dup = cfg.MaxAge
	}
	replicas := cfg.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardNew,
		Replicas:   replicas,
		MaxBytes:   maxBytes,
		MaxAge:     cfg.MaxAge,
		Duplicates: dup,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// Connect dials NATS as name and returns the connection and its JetStream
// handle. It does not wait for the server: the client keeps reconnecting
// forever, so that a service starts and serves while NATS is down (its
// outbox holds the events) and resumes publishing when NATS is back.
// Close with Drain.
func Connect(url, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	log = discardLogger(log)
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "server", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// Drain flushes nc's pending work and closes it, waiting at most timeout.
func Drain(nc *nats.Conn, timeout time.Duration) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}

// Config is the part of a service's configuration that concerns NATS.
type Config struct {
	NATSURL string `env:"NATS_URL, default=nats://127.0.0.1:4222"`
	// NATSReplicas is the replica count of the streams the service owns:
	// 1 locally, 3 in a clustered install.
	NATSReplicas int `env:"NATS_REPLICAS, default=1"`
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("NATS_URL is required"))
	}
	if c.NATSReplicas < 1 || c.NATSReplicas > 5 {
		errs = append(errs, fmt.Errorf("NATS_REPLICAS must be 1 to 5, got %d", c.NATSReplicas))
	}
	return errors.Join(errs...)
}
