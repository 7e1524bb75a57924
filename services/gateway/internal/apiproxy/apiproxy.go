// Package apiproxy routes the admin REST API, /api/v1/..., by path to the
// service that owns the resource: `keys`, `members`, `identityProviders`,
// `serviceAccounts` and `agents` collections and `me` to identity, `usage`
// to billing, `auditEvents` to audit, `orgs/*/providers/*:test` to the
// gateway's own REST handler, everything else to config. The
// gateway authenticates nothing here: each service verifies the caller
// itself (the Authorization header passes through), so a forwarded request
// is never trusted for being forwarded.
package apiproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Backends are the HTTP addresses (host:port, or an http:// URL) of the
// services behind the admin API, and the gateway's own REST handler for
// the methods it serves itself.
type Backends struct {
	Identity, Config, Billing, Audit string
	// Gateway serves the gateway's own methods (providers/*:test); nil
	// routes them to config like other provider paths.
	Gateway http.Handler
}

// Service names, as used in logs and errors.
const (
	gateway  = "gateway"
	identity = "identity"
	config   = "config"
	billing  = "billing"
	audit    = "audit"
)

// Owner returns the service that owns an /api/v1/ path: the collection
// segments (the 1st, 3rd, 5th... after /api/v1/, custom-method suffixes
// like ":totals" removed) decide. Only collection positions count, so that
// a resource whose id happens to be "keys" is not misrouted.
func Owner(escapedPath string) string {
	rest, ok := strings.CutPrefix(escapedPath, "/api/v1/")
	if !ok {
		return config
	}
	owner := config
	segs := strings.Split(rest, "/")
	// orgs/{org}/providers/{provider}:test is the gateway's own: only it
	// can call a provider.
	if len(segs) == 4 && segs[0] == "orgs" && segs[2] == "providers" && strings.HasSuffix(segs[3], ":test") {
		return gateway
	}
	for i, seg := range segs {
		if i%2 != 0 {
			continue
		}
		seg, _, _ = strings.Cut(seg, ":")
		switch seg {
		case "keys", "members", "identityProviders", "serviceAccounts", "agents":
			owner = identity
		case "me":
			if i == 0 {
				owner = identity
			}
		case "usage":
			owner = billing
		case "auditEvents":
			owner = audit
		}
	}
	return owner
}

// ParseAddress turns a backend address into a base URL: host:port means
// http://host:port.
func ParseAddress(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, errors.New("empty address")
	}
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, errors.New("want host:port or an http(s) URL")
		}
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		return nil, errors.New("want host:port or an http(s) URL without path or user info")
	}
	u.Path = ""
	return u, nil
}

// New returns the /api/ handler. Each backend gets its own reverse proxy
// over one shared pooled transport.
func New(b Backends, log *slog.Logger) (http.Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := &http.Transport{
		Proxy:                 nil, // in-cluster traffic never goes through an egress proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	h := &handler{proxies: map[string]*httputil.ReverseProxy{}, self: b.Gateway}
	for name, addr := range map[string]string{identity: b.Identity, config: b.Config, billing: b.Billing, audit: b.Audit} {
		target, err := ParseAddress(addr)
		if err != nil {
			return nil, fmt.Errorf("%s address: %w", name, err)
		}
		h.proxies[name] = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				// X-Forwarded-* from the client are dropped by Rewrite;
				// these are the gateway's own view of the client.
				pr.SetXForwarded()
			},
			Transport: transport,
			ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				log.Warn("admin API backend unreachable", "service", name, "method", r.Method, "path", r.URL.Path, "err", err)
				writeError(w, http.StatusBadGateway, 14, "the "+name+" service is unavailable")
			},
		}
	}
	return h, nil
}

type handler struct {
	proxies map[string]*httputil.ReverseProxy
	self    http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/api/v1/") {
		writeError(w, http.StatusNotFound, 5, "unknown API version; the admin API is under /api/v1/")
		return
	}
	owner := Owner(r.URL.EscapedPath())
	if owner == gateway {
		if h.self == nil {
			owner = config
		} else {
			h.self.ServeHTTP(w, r)
			return
		}
	}
	h.proxies[owner].ServeHTTP(w, r)
}

// writeError answers in the admin API's error format, the JSON of
// google.rpc.Status, as the services themselves do.
func writeError(w http.ResponseWriter, status, code int, message string) {
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{code, message, []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left; nothing to tell it
}
