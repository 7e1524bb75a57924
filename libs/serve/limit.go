package serve

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// overloaded is what a connection over the limit gets, once its request's
// headers have arrived, before it is closed: a whole HTTP response. Its body
// is an OpenAI-style error, which every client of the data plane can read
// (Anthropic's SDKs branch on the status and Retry-After).
var overloaded = []byte("HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: application/json\r\n" +
	"Retry-After: 1\r\n" +
	"Moat-Error-Code: gateway_overloaded\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 145\r\n\r\n" +
	`{"error":{"message":"The gateway has as many connections as it may; retry shortly.","type":"api_error","param":null,"code":"gateway_overloaded"}}`)

// limitListener accepts at most max connections at once; beyond that it
// answers each new connection with the overloaded response and closes it.
type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
	// idle holds the connections between requests (keep-alive), which
	// may be closed to make room: a client that keeps connections open
	// must not lock others out once the overload is over.
	mu   sync.Mutex
	idle map[*limitedConn]struct{}
	// shedding counts connections being answered 503; beyond maxShedding
	// the excess is closed without an answer.
	shedding atomic.Int64
}

// Bounds of shedding: connections answered at once, the wait for a
// request's headers, and what is read of them.
const (
	maxShedding = 256
	shedWait    = time.Second
	shedRead    = 8 << 10
)

// LimitConns bounds the open connections of lis to max (0: unbounded).
// Under overload the excess is shed at once instead of holding a goroutine
// and its buffers per waiting connection, which is what bounds a server's
// memory when clients open connections faster than it answers.
func LimitConns(lis net.Listener, max int) net.Listener {
	if max <= 0 {
		return lis
	}
	return &limitListener{Listener: lis, max: int64(max), idle: map[*limitedConn]struct{}{}}
}

// ConnState is the http.Server hook that tells the listener which
// connections sit idle between requests. A server using LimitConns must
// set it (Servers.Run does); without it no idle connection is reclaimed.
func ConnState(lis net.Listener) func(net.Conn, http.ConnState) {
	l, ok := lis.(*limitListener)
	if !ok {
		return nil
	}
	return func(c net.Conn, st http.ConnState) {
		lc, ok := c.(*limitedConn)
		if !ok {
			return
		}
		l.mu.Lock()
		if st == http.StateIdle {
			l.idle[lc] = struct{}{}
		} else {
			delete(l.idle, lc)
		}
		l.mu.Unlock()
	}
}

// reclaim closes one idle connection, if there is one, and reports
// whether it did.
func (l *limitListener) reclaim() bool {
	l.mu.Lock()
	var victim *limitedConn
	for c := range l.idle {
		victim = c
		break
	}
	if victim != nil {
		delete(l.idle, victim)
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	_ = victim.Close() // its client reconnects if it needs to; the close frees the slot
	return true
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		// Full: an idle keep-alive connection gives way to the new one
		// before anyone is refused.
		if l.reclaim() {
			if l.open.Add(1) <= l.max {
				return &limitedConn{Conn: c, l: l}, nil
			}
			l.open.Add(-1)
		}
		if l.shedding.Add(1) > maxShedding {
			l.shedding.Add(-1)
			_ = c.Close() // overloaded even at shedding: nothing more to do with it
			continue
		}
		go l.shed(c)
	}
}

// shed answers c 503 after its request's headers (an HTTP client reads no
// answer it has not asked for), within shedWait, and closes it.
func (l *limitListener) shed(c net.Conn) {
	defer l.shedding.Add(-1)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(shedWait)) // best effort: a failed deadline only makes the wait unbounded by it
	buf := make([]byte, 0, 1024)
	for len(buf) < shedRead && !bytes.Contains(buf, []byte("\r\n\r\n")) {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			return
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
	_, _ = c.Write(overloaded) // best effort: the connection is closed next
}

type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.mu.Lock()
		delete(c.l.idle, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
