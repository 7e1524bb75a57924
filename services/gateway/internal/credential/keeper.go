package credential

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"sync"
)

// Keeper holds the upstream credentials that need background work (Google
// and Entra ID access tokens, AWS credentials that expire), one per
// provider: a
// snapshot asks for them when it is built, the Keeper starts a refresher
// the first time and hands the same credential out while its
// configuration is unchanged, and Retain stops those no snapshot names any
// more. Nothing on the request path waits on it. Safe for concurrent use.
type Keeper struct {
	client *http.Client
	log    *slog.Logger
	// entraHost is the Entra ID authority host of Azure credentials;
	// empty for the Azure public cloud's.
	entraHost string

	mu     sync.Mutex
	ctx    context.Context // nil until Run
	google map[string]*kept[*Google]
	azure  map[string]*kept[*Azure]
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
	return &Keeper{client: client, log: log, google: map[string]*kept[*Google]{}, azure: map[string]*kept[*Azure]{}, aws: map[string]*kept[*AWS]{}}
}

// WithEntraAuthority makes the Keeper's Azure credentials get their tokens
// from the Entra ID authority at host (an https URL, such as a sovereign
// cloud's or a test's fake) instead of the Azure public cloud's. Call it
// before the first credential.
func (k *Keeper) WithEntraAuthority(host string) *Keeper {
	k.entraHost = host
	return k
}

// Run keeps the refreshers running until ctx ends; credentials asked for
// before Run start refreshing when it begins.
func (k *Keeper) Run(ctx context.Context) error {
	k.mu.Lock()
	k.ctx = ctx
	startAll(k, k.google)
	startAll(k, k.azure)
	startAll(k, k.aws)
	k.mu.Unlock()
	<-ctx.Done()
	return nil
}

func startAll[T any](k *Keeper, m map[string]*kept[T]) {
	for name, e := range m {
		k.start(name, e.run, &e.cancel)
	}
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
	return keep(k, k.google, name, sha256.Sum256(keyJSON), func() (*Google, error) {
		return NewGoogle(ctx, keyJSON, k.client)
	})
}

// Azure returns the Entra ID credential of provider name for
// credentialJSON (client credentials), the one already kept when
// credentialJSON is unchanged.
func (k *Keeper) Azure(ctx context.Context, name string, credentialJSON []byte) (*Azure, error) {
	return keep(k, k.azure, name, sha256.Sum256(credentialJSON), func() (*Azure, error) {
		return NewAzure(ctx, credentialJSON, k.client, k.entraHost)
	})
}

// AWS returns the AWS credential of provider name for credentialJSON and
// region, the one already kept when both are unchanged.
func (k *Keeper) AWS(ctx context.Context, name string, credentialJSON []byte, region string) (*AWS, error) {
	print := sha256.Sum256(append(append([]byte(region), 0), credentialJSON...))
	return keep(k, k.aws, name, print, func() (*AWS, error) {
		return NewAWS(ctx, credentialJSON, region, k.client)
	})
}

// keep returns the credential kept in m for name if it was made from the
// configuration whose hash is print; otherwise it makes one with build,
// stops the one it replaces and starts the new one's refresher.
func keep[T interface{ Run(context.Context) error }](k *Keeper, m map[string]*kept[T], name string, print [32]byte, build func() (T, error)) (T, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := m[name]; ok && e.print == print {
		return e.cred, nil
	}
	c, err := build()
	if err != nil {
		var zero T
		return zero, err
	}
	k.stop(m[name])
	e := &kept[T]{cred: c, print: print, run: c.Run}
	m[name] = e
	k.start(name, e.run, &e.cancel)
	return c, nil
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
	retain(k.google, names)
	retain(k.azure, names)
	retain(k.aws, names)
}

func retain[T any](m map[string]*kept[T], names map[string]bool) {
	for name, e := range m {
		if !names[name] {
			e.stopIt()
			delete(m, name)
		}
	}
}
