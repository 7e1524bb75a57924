package app_test

import (
	"testing"

	"github.com/moat-ai/moat/libs/serve/servetest"
	"github.com/moat-ai/moat/services/config/internal/app"
)

func TestCommon(t *testing.T) {
	t.Parallel()
	servetest.TestCommon(t, servetest.Service{Run: app.Run, Migrations: app.Migrations, Stream: "CONFIG"})
}
