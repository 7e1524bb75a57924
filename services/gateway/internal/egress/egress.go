// Package egress is the gateway's dial-time guard against server-side
// request forgery through provider base URLs. An administrator sets those
// URLs, but a URL naming a public host can still resolve to the metadata
// service or to a pod of the cluster (DNS rebinding), and an address can
// be spelled in forms a string check misses (decimal, hex, IPv4-mapped
// IPv6). The guard therefore looks at the one thing that cannot be
// disguised: the IP address a connection is about to be made to, after
// resolution, in the dialer's Control hook.
//
// Refused unless an allowed CIDR contains them: loopback, unspecified,
// private (RFC 1918, ULA fc00::/7), link-local (169.254.0.0/16 with the
// metadata address, fe80::/10), multicast, broadcast, "this network"
// 0.0.0.0/8, shared address space (CGNAT) 100.64.0.0/10, and the
// IPv4-mapped IPv6 forms of all of these.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrBlocked is the cause of a dial the policy refused. It names no
// address: the error may travel towards a client.
var ErrBlocked = errors.New("address not allowed by the egress policy")

// special are the IPv4 ranges refused beyond what netip classifies.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network", dialed as loopback by some stacks
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (CGNAT), often cluster-internal
}

// Policy decides which addresses may be dialed. The zero Policy refuses
// every internal address.
type Policy struct {
	allow []netip.Prefix
}

// New returns the policy that also allows the addresses inside allow.
func New(allow []netip.Prefix) Policy {
	return Policy{allow: append([]netip.Prefix(nil), allow...)}
}

// ParseCIDRs reads a comma-separated list of CIDRs ("10.1.0.0/16,
// fd00:1::/64"); the empty string is the empty list. A bare address is an
// error rather than a guess at its prefix length.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("want a comma-separated list of CIDRs: %w", err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Allowed reports whether ip may be dialed.
func (p Policy) Allowed(ip netip.Addr) bool {
	// A zone only says which interface; Prefix.Contains never matches a
	// zoned address.
	ip = ip.WithZone("")
	plain := ip.Unmap()
	for _, a := range p.allow {
		if a.Contains(ip) || a.Contains(plain) {
			return true
		}
	}
	return public(plain)
}

// public reports whether ip (unmapped) is a global unicast address outside
// the private and special ranges.
func public(ip netip.Addr) bool {
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return false
	}
	for _, s := range special {
		if s.Contains(ip) {
			return false
		}
	}
	return true
}

// Control is a net.Dialer ControlContext: it runs after resolution with the
// "ip:port" about to be connected, and refuses it unless Allowed. An
// address it cannot read is refused too.
func (p Policy) Control(_ context.Context, _, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return ErrBlocked
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !p.Allowed(ip) {
		return ErrBlocked
	}
	return nil
}
