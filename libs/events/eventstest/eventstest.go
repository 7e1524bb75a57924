// Package eventstest runs a real NATS server with JetStream inside the test
// process (the nats-server module as a library), so event tests need no
// broker install.
package eventstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an in-process JetStream server.
type Server struct {
	*server.Server
	// StoreDir is where JetStream keeps its data; RestartServer reuses it.
	StoreDir string
	port     int
}

// NewServer starts a JetStream server on a free loopback port, storing in a
// temporary directory with writes synced to disk, and shuts it down when the
// test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	return start(t, t.TempDir(), -1)
}

// Restart shuts s down (as a crash would, without client goodbyes) and starts
// a new server on the same port and store directory, as an operator restart
// after a crash would.
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	s.Shutdown()
	s.WaitForShutdown()
	return start(t, s.StoreDir, s.port)
}

func start(t testing.TB, dir string, port int) *Server {
	t.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: true,
		NoLog:      true,
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s, StoreDir: dir, port: s.Addr().(*net.TCPAddr).Port}
}

// Connect opens a client connection to s, closed when the test ends.
func Connect(t testing.TB, s *Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
