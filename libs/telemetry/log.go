package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// NewHandler returns a JSON slog handler that writes records at or above
// level to w and adds trace_id and span_id when the record's context carries
// a valid span. The ids are always top-level keys, even under WithGroup,
// because that is where log backends look for them to link a line to its trace.
// The handler is safe for concurrent use; it serializes its writes to w.
func NewHandler(w io.Writer, level slog.Leveler) slog.Handler {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return &handler{plain: h, base: h}
}

// handler adds trace ids to records. It keeps two views of the same
// configuration: plain has every WithAttrs/WithGroup applied natively and
// serves lines without a span at JSONHandler speed; base has only the
// attributes added before the first group, and groups holds the rest, so that
// the ids can be written ahead of the groups.
type handler struct {
	plain  slog.Handler
	base   slog.Handler
	groups []group
}

// group is one WithGroup call with the attributes later added inside it.
type group struct {
	name  string
	attrs []slog.Attr
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.plain.Enabled(ctx, l)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.plain.Handle(ctx, r)
	}
	// A fresh record rather than r.AddAttrs: r may share its attribute
	// storage with a copy that another handler still reads.
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(
		slog.String("trace_id", sc.TraceID().String()),
		slog.String("span_id", sc.SpanID().String()),
	)
	if len(h.groups) == 0 {
		r.Attrs(func(a slog.Attr) bool {
			nr.AddAttrs(a)
			return true
		})
		return h.base.Handle(ctx, nr)
	}
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	for i := len(h.groups) - 1; i >= 0; i-- {
		g := h.groups[i]
		inner := make([]slog.Attr, 0, len(g.attrs)+len(attrs))
		inner = append(append(inner, g.attrs...), attrs...)
		// GroupValue drops empty groups, matching what WithGroup does for
		// a record without attributes.
		attrs = []slog.Attr{{Key: g.name, Value: slog.GroupValue(inner...)}}
	}
	nr.AddAttrs(attrs...)
	return h.base.Handle(ctx, nr)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	n := &handler{plain: h.plain.WithAttrs(attrs)}
	if len(h.groups) == 0 {
		n.base = n.plain
		return n
	}
	n.base = h.base
	n.groups = slices.Clone(h.groups)
	last := &n.groups[len(n.groups)-1]
	last.attrs = append(slices.Clip(last.attrs), attrs...)
	return n
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{
		plain:  h.plain.WithGroup(name),
		base:   h.base,
		groups: append(slices.Clip(h.groups), group{name: name}),
	}
}

// ParseLevel parses a LOG_LEVEL value: debug, info, warn or error, in any
// case. The empty string means info, so that the variable is optional.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("unknown log level %q, want debug, info, warn or error", s)
	}
}

// NewLogger returns a JSON logger at the named level (see ParseLevel) that
// writes to w and tags every record with the service name.
func NewLogger(w io.Writer, level, service string) (*slog.Logger, error) {
	l, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	return slog.New(NewHandler(w, l)).With("service", service), nil
}
