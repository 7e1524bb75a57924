// Package serve runs a process's gRPC and HTTP servers until their context
// ends, then stops them within a bounded grace period, and keeps the one
// readiness state that both protocols report. A service wires it as:
// NewHealth, NewGRPCServer, NewHTTPHandler, then Health.Run, GRPC and HTTP
// under one errgroup, with Health.Shutdown called before the servers stop
// (see the package example).
package serve

import (
	"fmt"
	"net"
)

// Listen opens a TCP listener on addr (host:port; port 0 picks a free one).
// Listening happens apart from serving so that a bad address fails the
// process at startup, and so tests can learn the chosen port from Addr
// before serving starts.
func Listen(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return lis, nil
}
