package serve

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Beyond the limit a new connection gets a whole 503 with Retry-After
// while the others are busy; an idle keep-alive connection gives way to
// a new one instead.
func TestLimitConns(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	limited := LimitConns(lis, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: time.Second,
		ConnState:         ConnState(limited),
	}
	go func() { _ = srv.Serve(limited) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + lis.Addr().String()
	get := func(c *http.Client, path string) (int, http.Header, []byte) {
		t.Helper()
		resp, err := c.Get(url + path)
		if err != nil {
			t.Error(err)
			return 0, nil, nil
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		return resp.StatusCode, resp.Header, b
	}

	first := &http.Client{Transport: &http.Transport{}}
	done := make(chan int, 1)
	go func() {
		code, _, _ := get(first, "/slow")
		done <- code
	}()
	<-started
	second := &http.Client{Transport: &http.Transport{}}
	code, h, body := get(second, "/")
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" || json.Unmarshal(body, &e) != nil || e.Error.Code != "gateway_overloaded" {
		t.Errorf("over the limit = %d %v %s, want 503 with Retry-After and a JSON error", code, h, body)
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the busy connection = %d, want 200", code)
	}
	// The first connection is now idle (keep-alive): the second client's
	// new connection takes its place.
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, _ = get(second, "/")
		if code == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Errorf("with the other connection idle = %d, want 200", code)
	}
}
