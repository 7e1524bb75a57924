package snapshot

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Versioned is a followed state that reports its version: the key index.
type Versioned interface {
	Version() int64
	Ready() bool
}

// RegisterMetrics publishes, for the configuration snapshot (source
// "config") and the key index (source "key_index"):
//
//   - moat_gateway_snapshot_age_seconds: 0 while the stream is up, else the
//     time since it broke; the alert for a gateway serving stale state.
//   - moat_gateway_snapshot_version: the version held.
//
// Neither is reported before the first snapshot of its source.
func RegisterMetrics(mp metric.MeterProvider, st *Store, keys Versioned, keysFresh *Freshness) error {
	meter := mp.Meter("github.com/moat-ai/moat/services/gateway/internal/snapshot")
	age, err := meter.Float64ObservableGauge("moat_gateway_snapshot_age_seconds",
		metric.WithDescription("Seconds since the gateway's copy of a followed state was last known current (0 while its stream is up)."))
	if err != nil {
		return fmt.Errorf("register snapshot age gauge: %w", err)
	}
	version, err := meter.Int64ObservableGauge("moat_gateway_snapshot_version",
		metric.WithDescription("Version of the followed state the gateway serves from."))
	if err != nil {
		return fmt.Errorf("register snapshot version gauge: %w", err)
	}
	config := metric.WithAttributes(attribute.String("source", "config"))
	keyIndex := metric.WithAttributes(attribute.String("source", "key_index"))
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now()
		if st.Ready() {
			o.ObserveInt64(version, st.Load().Version(), config)
		}
		if a, ok := st.Fresh.Age(now); ok {
			o.ObserveFloat64(age, a.Seconds(), config)
		}
		if keys.Ready() {
			o.ObserveInt64(version, keys.Version(), keyIndex)
		}
		if a, ok := keysFresh.Age(now); ok {
			o.ObserveFloat64(age, a.Seconds(), keyIndex)
		}
		return nil
	}, age, version)
	if err != nil {
		return fmt.Errorf("register snapshot metrics callback: %w", err)
	}
	return nil
}
