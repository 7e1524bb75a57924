package serve

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Beyond the limit a connection gets a whole 503 with Retry-After and is
// closed; once a connection closes, the next one is served.
func TestLimitConns(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(LimitConns(lis, 1)) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + lis.Addr().String()

	// The first client keeps its connection open (keep-alive).
	first := &http.Client{Transport: &http.Transport{}}
	get := func(c *http.Client) (int, http.Header, []byte) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, b
	}
	if code, _, _ := get(first); code != http.StatusOK {
		t.Fatalf("first connection: %d", code)
	}
	second := &http.Client{Transport: &http.Transport{}}
	code, h, body := get(second)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" || json.Unmarshal(body, &e) != nil || e.Error.Code != "gateway_overloaded" {
		t.Errorf("over the limit = %d %v %s, want 503 with Retry-After and a JSON error", code, h, body)
	}
	first.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ = get(second)
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Errorf("after the first connection closed = %d, want 200", code)
	}
}
