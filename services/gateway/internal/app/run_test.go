package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/moat-ai/moat/libs/serve/servetest"
	"github.com/moat-ai/moat/services/gateway/internal/app"
)

func TestCommon(t *testing.T) {
	t.Parallel()
	servetest.TestCommon(t, servetest.Service{Run: app.Run, Stream: "GATEWAY"})
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

func TestMigrateIsANoOp(t *testing.T) {
	t.Parallel()
	if err := app.Run(context.Background(), []string{"migrate"}, servetest.Env{}.Getenv, &servetest.SyncBuffer{}); err != nil {
		t.Fatalf("Run(migrate) = %v, want nil", err)
	}
}
