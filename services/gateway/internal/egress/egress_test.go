package egress_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/services/gateway/internal/egress"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cluster := []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:1::/64")}
	for _, tc := range []struct {
		ip    string
		allow []netip.Prefix
		want  bool
	}{
		{ip: "127.0.0.1"},
		{ip: "127.1.2.3"},
		{ip: "::1"},
		{ip: "::ffff:127.0.0.1"},
		{ip: "10.0.0.1"},
		{ip: "172.16.0.1"},
		{ip: "192.168.1.1"},
		{ip: "169.254.169.254"},
		{ip: "::ffff:169.254.169.254"},
		{ip: "fe80::1"},
		{ip: "fe80::1%eth0"},
		{ip: "fd00::1"},
		{ip: "fc00::1"},
		{ip: "100.64.0.1"},
		{ip: "100.127.255.254"},
		{ip: "0.0.0.0"},
		{ip: "0.1.2.3"},
		{ip: "::"},
		{ip: "224.0.0.1"},
		{ip: "ff02::1"},
		{ip: "255.255.255.255"},
		{ip: "::ffff:10.0.0.1"},
		{ip: "8.8.8.8", want: true},
		{ip: "::ffff:8.8.8.8", want: true},
		{ip: "100.128.0.1", want: true},
		{ip: "2001:4860:4860::8888", want: true},
		{ip: "127.0.0.1", allow: loopback, want: true},
		{ip: "::ffff:127.0.0.1", allow: loopback, want: true},
		{ip: "::1", allow: loopback},
		{ip: "10.0.0.1", allow: loopback},
		{ip: "10.20.3.4", allow: cluster, want: true},
		{ip: "10.21.3.4", allow: cluster},
		{ip: "fd00:1::5", allow: cluster, want: true},
		{ip: "fd00:2::5", allow: cluster},
		{ip: "169.254.169.254", allow: cluster},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if got := egress.New(tc.allow).Allowed(ip); got != tc.want {
			t.Errorf("New(%v).Allowed(%s) = %v, want %v", tc.allow, tc.ip, got, tc.want)
		}
	}
}

func TestControl(t *testing.T) {
	t.Parallel()
	p := egress.New(nil)
	for _, tc := range []struct {
		address string
		want    error
	}{
		{"127.0.0.1:443", egress.ErrBlocked},
		{"[::ffff:127.0.0.1]:443", egress.ErrBlocked},
		{"[fe80::1%eth0]:443", egress.ErrBlocked},
		{"169.254.169.254:80", egress.ErrBlocked},
		{"localhost:80", egress.ErrBlocked}, // never resolved here: not an IP, refused
		{"no-port", egress.ErrBlocked},
		{"8.8.8.8:443", nil},
		{"[2001:4860:4860::8888]:443", nil},
	} {
		if err := p.Control(context.Background(), "tcp", tc.address, nil); !errors.Is(err, tc.want) {
			t.Errorf("Control(%q) = %v, want %v", tc.address, err, tc.want)
		}
	}
}

// A real dial: the name is resolved first, and the address it resolves to
// is what the policy judges.
func TestDialLocalhost(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(lis.Addr().String())

	d := &net.Dialer{ControlContext: egress.New(nil).Control}
	for _, host := range []string{"localhost", "127.0.0.1", "2130706433", "0x7f.1"} {
		if c, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort(host, port)); err == nil {
			_ = c.Close()
			t.Errorf("dial %s: connected, want refused", host)
		} else if host == "localhost" || host == "127.0.0.1" {
			if !errors.Is(err, egress.ErrBlocked) {
				t.Errorf("dial %s = %v, want ErrBlocked", host, err)
			}
		}
	}

	d.ControlContext = egress.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}).Control
	c, err := d.DialContext(t.Context(), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatalf("dial with loopback allowed = %v", err)
	}
	_ = c.Close()
}

func TestParseCIDRs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    []netip.Prefix
		wantErr bool
	}{
		{in: ""},
		{in: "  "},
		{in: "127.0.0.0/8", want: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		{in: "10.1.2.3/16, fd00::/8", want: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}},
		{in: "10.0.0.1", wantErr: true},
		{in: "10.0.0.0/8,,", wantErr: true},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "example.com/8", wantErr: true},
	} {
		got, err := egress.ParseCIDRs(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseCIDRs(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("ParseCIDRs(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}
