package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	"github.com/moat-ai/moat/services/gateway/internal/app"
)

// The gateway starts, reports ready on gRPC and HTTP, creates its stream,
// and stops cleanly when its context ends.
func TestServe(t *testing.T) {
	t.Parallel()
	srv := eventstest.NewServer(t)
	_, js := eventstest.Connect(t, srv)
	e := servetest.Env{
		"GRPC_ADDR":     servetest.FreeAddr(t),
		"HTTP_ADDR":     servetest.FreeAddr(t),
		"NATS_URL":      srv.ClientURL(),
		"DRAIN_TIMEOUT": "2s",
	}
	p := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	servetest.CheckProbes(t, e["HTTP_ADDR"])

	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := js.Stream(context.Background(), "GATEWAY"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream GATEWAY not created within 10s; log:\n%s", p.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

// The gateway serves while NATS is unreachable: events wait, traffic does not.
func TestServeWithoutNATS(t *testing.T) {
	t.Parallel()
	e := servetest.Env{
		"GRPC_ADDR": servetest.FreeAddr(t),
		"HTTP_ADDR": servetest.FreeAddr(t),
		"NATS_URL":  "nats://" + servetest.FreeAddr(t),
	}
	p := servetest.Start(t, app.Run, e)
	servetest.WaitServing(t, p, e["GRPC_ADDR"], 20*time.Second)
	servetest.CheckProbes(t, e["HTTP_ADDR"])
}

func TestRunRejectsBadInvocation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  servetest.Env
		want []string
	}{
		{"unknown subcommand", []string{"start"}, servetest.Env{}, []string{`unknown subcommand "start"`}},
		{"every config problem at once", nil, servetest.Env{"NATS_REPLICAS": "0", "DRAIN_TIMEOUT": "-1s"},
			[]string{"NATS_REPLICAS must be 1 to 5", "DRAIN_TIMEOUT must be positive"}},
		{"bad duration", nil, servetest.Env{"DRAIN_TIMEOUT": "soon"}, []string{"DRAIN_TIMEOUT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := app.Run(context.Background(), tt.args, tt.env.Getenv, &servetest.SyncBuffer{})
			if err == nil {
				t.Fatalf("Run(%q) = nil, want an error", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run(%q) = %q, want it to mention %q", tt.args, err, w)
				}
			}
		})
	}
}

func TestMigrateIsANoOp(t *testing.T) {
	t.Parallel()
	if err := app.Run(context.Background(), []string{"migrate"}, servetest.Env{}.Getenv, &servetest.SyncBuffer{}); err != nil {
		t.Fatalf("Run(migrate) = %v, want nil", err)
	}
}
