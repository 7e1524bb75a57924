package credential

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"sync"
)

// Keeper holds the upstream credentials that need background work (Google
// access tokens, AWS credentials that expire), one per provider: a
// snapshot asks for them when it is built, the Keeper starts a refresher
// the first time and hands the same credential out while its
// configuration is unchanged, and Retain stops those no snapshot names any
// more. Nothing on the request path waits on it. Safe for concurrent use.
type Keeper struct {
	client *http.Client
	log    *slog.Logger

	mu     sync.Mutex
	ctx    context.Context // nil until Run
	google map[string]*kept[*Google]
	aws    map[string]*kept[*AWS]
}

type kept[T any] struct {
	cred   T
	print  [32]byte // of the configuration it was made from
	cancel context.CancelFunc
	run    func(context.Context) error
}

// NewKeeper returns a Keeper whose credentials fetch tokens through client
// (the gateway's egress-checked client).
func NewKeeper(client *http.Client, log *slog.Logger) *Keeper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keeper{client: client, log: log, google: map[string]*kept[*Google]{}, aws: map[string]*kept[*AWS]{}}
}

// Run keeps the refreshers running until ctx ends; credentials asked for
// before Run start refreshing when it begins.
func (k *Keeper) Run(ctx context.Context) error {
	k.mu.Lock()
	k.ctx = ctx
	for name, e := range k.google {
		k.start(name, e.run, &e.cancel)
	}
	for name, e := range k.aws {
		k.start(name, e.run, &e.cancel)
	}
	k.mu.Unlock()
	<-ctx.Done()
	return nil
}

// start runs a refresher under the Keeper's context; k.mu is held.
func (k *Keeper) start(name string, run func(context.Context) error, cancel *context.CancelFunc) {
	if k.ctx == nil || *cancel != nil {
		return
	}
	ctx, c := context.WithCancel(k.ctx) //nolint:gosec // the cancel is kept in *cancel and called by stopIt or when Run ends
	*cancel = c
	go func() {
		if err := run(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("credential refresher stopped", "provider", name, "err", err)
		}
	}()
}

// Google returns the service-account credential of provider name for
// keyJSON, the one already kept when keyJSON is unchanged.
func (k *Keeper) Google(ctx context.Context, name string, keyJSON []byte) (*Google, error) {
	print := sha256.Sum256(keyJSON)
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.google[name]; ok && e.print == print {
		return e.cred, nil
	}
	g, err := NewGoogle(ctx, keyJSON, k.client)
	if err != nil {
		return nil, err
	}
	k.stop(k.google[name])
	e := &kept[*Google]{cred: g, print: print, run: g.Run}
	k.google[name] = e
	k.start(name, e.run, &e.cancel)
	return g, nil
}

// AWS returns the AWS credential of provider name for credentialJSON and
// region, the one already kept when both are unchanged.
func (k *Keeper) AWS(ctx context.Context, name string, credentialJSON []byte, region string) (*AWS, error) {
	print := sha256.Sum256(append(append([]byte(region), 0), credentialJSON...))
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.aws[name]; ok && e.print == print {
		return e.cred, nil
	}
	a, err := NewAWS(ctx, credentialJSON, region, k.client)
	if err != nil {
		return nil, err
	}
	k.stop(k.aws[name])
	e := &kept[*AWS]{cred: a, print: print, run: a.Run}
	k.aws[name] = e
	k.start(name, e.run, &e.cancel)
	return a, nil
}

func (k *Keeper) stop(e interface{ stopIt() }) {
	if e != nil {
		e.stopIt()
	}
}

func (e *kept[T]) stopIt() {
	if e != nil && e.cancel != nil {
		e.cancel()
	}
}

// Retain stops and forgets the credentials of providers not in names.
func (k *Keeper) Retain(names map[string]bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, e := range k.google {
		if !names[name] {
			e.stopIt()
			delete(k.google, name)
		}
	}
	for name, e := range k.aws {
		if !names[name] {
			e.stopIt()
			delete(k.aws, name)
		}
	}
}
