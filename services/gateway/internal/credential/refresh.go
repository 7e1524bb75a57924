package credential

// This file holds what the Google and Azure credentials share: one access
// token, fetched by Run at once and then again at 80 % of each token's
// lifetime, failures retried after a jittered exponential backoff, and
// handed out by Token from memory.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Token (of Google and Azure): before the first token it returns
// an error wrapping ErrNoToken, and once the token is expired (or within
// seconds of it) one wrapping ErrTokenExpired.
var (
	ErrNoToken      = errors.New("no token yet")
	ErrTokenExpired = errors.New("token expired and refresh failing")
)

// Refresh timing. A token is refreshed at 80 % of its lifetime (12 minutes
// before a one-hour token expires), which leaves time for several retries
// before it runs out; failed refreshes are retried after a jittered
// exponential backoff, so that gateway replicas started together do not
// hit the token endpoint in step.
const (
	refreshAt      = 0.8
	minRefresh     = time.Second
	retryBase      = time.Second
	retryMax       = time.Minute
	requestTimeout = 30 * time.Second
	// expiryMargin: a token this close to its expiry is not handed out,
	// since it could expire before the upstream reads it.
	expiryMargin = 10 * time.Second
)

// fetchFunc gets a new access token and how long it lives. Its error says
// why it failed and never holds a secret: it is shown by Token.
type fetchFunc func(ctx context.Context) (token string, lifetime time.Duration, err error)

// refresher keeps the access token that fetch gets fresh. Its token is
// safe for concurrent use and does no I/O.
type refresher struct {
	// what names the credential in errors ("google credential").
	what  string
	fetch fetchFunc

	// The clock and the jitter, replaced by tests.
	now    func() time.Time
	wait   func(ctx context.Context, d time.Duration) error
	jitter func() float64 // in [0, 1)

	state     atomic.Pointer[tokenState]
	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
}

// tokenState is what token reads, replaced whole on every refresh.
type tokenState struct {
	token  string
	expiry time.Time
	// failure says why the last refresh failed, empty after a success.
	// It is a fetchFunc's error and never holds a secret.
	failure string
}

func newRefresher(what string, fetch fetchFunc) *refresher {
	return &refresher{what: what, fetch: fetch, now: time.Now, wait: sleep, jitter: rand.Float64, ready: make(chan struct{})}
}

// token returns the current access token, or an error wrapping ErrNoToken
// or ErrTokenExpired that says why the last refresh failed, if it did.
func (r *refresher) token() (string, error) {
	s := r.state.Load()
	switch {
	case s == nil || s.token == "":
		return "", r.stateError(ErrNoToken, s)
	case !r.now().Before(s.expiry.Add(-expiryMargin)):
		return "", r.stateError(ErrTokenExpired, s)
	}
	return s.token, nil
}

func (r *refresher) stateError(base error, s *tokenState) error {
	switch {
	case s != nil && s.failure != "":
		return fmt.Errorf("%s: %w (last refresh: %s)", r.what, base, s.failure)
	case !r.running.Load():
		return fmt.Errorf("%s: %w (not refreshing: Run is not running)", r.what, base)
	}
	return fmt.Errorf("%s: %w", r.what, base)
}

// run obtains a token at once and keeps it fresh until ctx is done,
// refreshing at 80 % of each token's lifetime and retrying failures with
// jittered exponential backoff (1 s doubling to 1 min); meanwhile token
// keeps returning the previous token until it expires. It returns nil
// when ctx is done, and an error only if it is already running.
func (r *refresher) run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%s: Run is already running", r.what)
	}
	defer r.running.Store(false)
	failures := 0
	for {
		next, err := r.refresh(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.fail(err)
			failures++
			next = r.backoff(failures)
		} else {
			failures = 0
		}
		if r.wait(ctx, next) != nil {
			return nil
		}
	}
}

// refresh gets a token and returns when to refresh it.
func (r *refresher) refresh(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	tok, lifetime, err := r.fetch(ctx)
	switch {
	case err != nil:
		return 0, err
	case tok == "":
		return 0, errors.New("the token endpoint answered without an access_token")
	case lifetime <= expiryMargin:
		return 0, errors.New("the token endpoint answered a token about to expire")
	}
	// The lifetime carries the expiry over to r.now's clock.
	r.state.Store(&tokenState{token: tok, expiry: r.now().Add(lifetime)})
	r.readyOnce.Do(func() { close(r.ready) })
	return max(time.Duration(float64(lifetime)*refreshAt), minRefresh), nil
}

// fail records a failed refresh, keeping the current token.
func (r *refresher) fail(err error) {
	s := &tokenState{failure: err.Error()}
	if old := r.state.Load(); old != nil {
		s.token, s.expiry = old.token, old.expiry
	}
	r.state.Store(s)
}

// backoff is the wait before retry n (from 1): retryBase doubled n−1
// times, at most retryMax, then drawn from its upper half.
func (r *refresher) backoff(n int) time.Duration {
	d := retryMax
	if n <= 6 {
		d = min(retryBase<<(n-1), retryMax)
	}
	return d/2 + time.Duration(r.jitter()*float64(d/2))
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
