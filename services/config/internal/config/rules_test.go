package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"abc", true},
		{"a-1", true},
		{"a" + strings.Repeat("b", 62), true},
		{"ab", false},
		{"a" + strings.Repeat("b", 63), false},
		{"1ab", false},
		{"-ab", false},
		{"ab-", false},
		{"aBc", false},
		{"a_c", false},
		{"a.c", false},
		{"ab\u00e9", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := validID(tt.id); got != tt.want {
			t.Errorf("validID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestParseNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		parse func(string) bool
		in    string
		want  bool
	}{
		{"org", orgOK, "orgs/acme", true},
		{"org with trailing slash", orgOK, "orgs/acme/", false},
		{"org wrong collection", orgOK, "org/acme", false},
		{"org bad id", orgOK, "orgs/Acme", false},
		{"project", projectOK, "orgs/acme/projects/web", true},
		{"project as org", orgOK, "orgs/acme/projects/web", false},
		{"project wrong collection", projectOK, "orgs/acme/providers/web", false},
		{"provider", providerOK, "orgs/acme/providers/openai", true},
		{"route", routeOK, "orgs/acme/projects/web/routes/gpt", true},
		{"route short", routeOK, "orgs/acme/projects/web/routes", false},
		{"empty", routeOK, "", false},
	}
	for _, tt := range tests {
		if got := tt.parse(tt.in); got != tt.want {
			t.Errorf("%s: parse(%q) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
}

func orgOK(s string) bool      { _, ok := ParseOrganizationName(s); return ok }
func projectOK(s string) bool  { _, _, ok := ParseProjectName(s); return ok }
func providerOK(s string) bool { _, _, ok := ParseProviderName(s); return ok }
func routeOK(s string) bool    { _, _, _, ok := ParseRouteName(s); return ok }

func TestOrganizationOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"orgs/acme":                         "orgs/acme",
		"orgs/acme/projects/web/routes/gpt": "orgs/acme",
		"orgs/A":                            "",
		"":                                  "",
		"keys/k1":                           "",
	} {
		if got := OrganizationOf(in); got != want {
			t.Errorf("OrganizationOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// reason returns the reason of a *ValidationError on field, "" for any
// other error or none.
func reason(err error, field string) string {
	var v *ValidationError
	if !errors.As(err, &v) || v.Field != field {
		return ""
	}
	return v.Reason
}

func TestCheckBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		want string // "" for valid, else a word of the reason
	}{
		{"https://api.openai.com/v1", ""},
		{"http://127.0.0.1:8000/v1", ""},
		{"http://[::1]:8000", ""},
		{"https://api.example.com/", ""},
		{"", "required"},
		{"api.openai.com/v1", "absolute"},
		{"ftp://example.com", "absolute"},
		{"file:///etc/passwd", "absolute"},
		{"https:example.com", "absolute"},
		{"https://", "host"},
		{"https://:443/v1", "host"},
		{"https://user:pass@example.com", "user information"},
		{"https://example.com/v1?key=x", "query"},
		{"https://example.com/v1?", "query"},
		{"https://example.com/v1#frag", "fragment"},
		{"https://example.com/v1#", "fragment"},
		{"https://exa mple.com", "valid URL"},
		{"https://example.com/" + strings.Repeat("a", maxBaseURL), "at most"},
	}
	for _, tt := range tests {
		err := checkBaseURL("provider.base_url", tt.url)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkBaseURL(%q) = %v, want nil", tt.url, err)
		case tt.want != "" && !strings.Contains(reason(err, "provider.base_url"), tt.want):
			t.Errorf("checkBaseURL(%q) = %v, want a reason mentioning %q", tt.url, err, tt.want)
		}
	}
	if got := normalizeBaseURL("https://api.example.com/v1//"); got != "https://api.example.com/v1" {
		t.Errorf("normalizeBaseURL = %q", got)
	}
}

func TestCheckModelAndCredential(t *testing.T) {
	t.Parallel()
	valid := []string{"gpt-4o", "demo model", "a", strings.Repeat("m", maxModel), "llama3:8b/instruct~v1"}
	for _, m := range valid {
		if err := checkModel("route.model", m, maxModel); err != nil {
			t.Errorf("checkModel(%q) = %v, want nil", m, err)
		}
	}
	invalid := []string{"", strings.Repeat("m", maxModel+1), "tab\there", "new\nline", "caf\u00e9", "\x7f"}
	for _, m := range invalid {
		if err := checkModel("route.model", m, maxModel); reason(err, "route.model") == "" || !strings.Contains(err.Error(), "printable ASCII") {
			t.Errorf("checkModel(%q) = %v, want a printable-ASCII validation error", m, err)
		}
	}

	const secret = "sk-live-abc\r\nX-Injected: yes"
	err := checkAPIKey("provider.credential", secret)
	if reason(err, "provider.credential") == "" || strings.Contains(err.Error(), "sk-live") {
		t.Errorf("checkAPIKey(secret with CRLF) = %v, want a validation error that does not quote it", err)
	}
	for _, c := range []string{"", "sk-abc_DEF.123", strings.Repeat("k", maxAPIKey)} {
		if err := checkAPIKey("provider.credential", c); err != nil {
			t.Errorf("checkAPIKey(len %d) = %v, want nil", len(c), err)
		}
	}
	for _, c := range []string{"with space", strings.Repeat("k", maxAPIKey+1), "caf\u00e9"} {
		if err := checkAPIKey("provider.credential", c); err == nil {
			t.Errorf("checkAPIKey(len %d) = nil, want an error", len(c))
		}
	}
}

func TestCheckDisplayName(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "Acme Corp", "Acmé ☂", strings.Repeat("é", maxDisplayName)} {
		if err := checkDisplayName("x", s); err != nil {
			t.Errorf("checkDisplayName(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{strings.Repeat("a", maxDisplayName+1), "bad\nline", "\xff"} {
		if err := checkDisplayName("x", s); err == nil {
			t.Errorf("checkDisplayName(%q) = nil, want an error", s)
		}
	}
}

func TestMaskCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mask  mask
		paths []string
		want  map[string]bool
		err   string
	}{
		{"one field", providerMask, []string{"base_url"}, map[string]bool{"base_url": true}, ""},
		{"settings whole and by field", providerMask, []string{"vertex", "bedrock.region", "azure.api_version"},
			map[string]bool{"vertex": true, "bedrock.region": true, "azure.api_version": true}, ""},
		{"unknown settings field", providerMask, []string{"vertex.region"}, nil, "unknown field"},
		{"name is ignored", providerMask, []string{"name", "credential"}, map[string]bool{"credential": true}, ""},
		{"empty", providerMask, nil, nil, "required"},
		{"only name", providerMask, []string{"name"}, nil, "names no field"},
		{"output only", providerMask, []string{"has_credential"}, nil, "output only"},
		{"create time", routeMask, []string{"create_time"}, nil, "output only"},
		{"unknown", routeMask, []string{"display_name"}, nil, "unknown field"},
		{"camel case is unknown", organizationMask, []string{"displayName"}, nil, "unknown field"},
		{"wildcard", projectMask, []string{"*"}, nil, "wildcard"},
	}
	for _, tt := range tests {
		got, err := tt.mask.check("update_mask", tt.paths)
		if tt.err != "" {
			if !strings.Contains(reason(err, "update_mask"), tt.err) {
				t.Errorf("%s: check(%q) error = %v, want one mentioning %q", tt.name, tt.paths, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: check(%q) = %v", tt.name, tt.paths, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: check(%q) mismatch (-want +got):\n%s", tt.name, tt.paths, diff)
		}
	}
}

func TestPageTokens(t *testing.T) {
	t.Parallel()
	const cursor = "0190b0a4-7c2e-7000-8000-000000000001"
	tok := nextPageToken("orgs/acme", cursor)
	p, err := parsePage("orgs/acme", 10, tok)
	if err != nil || p != (Page{Size: 10, After: cursor}) {
		t.Errorf("parsePage(own token) = %+v, %v; want size 10 after %s", p, err, cursor)
	}
	if nextPageToken("orgs/acme", "") != "" {
		t.Error("nextPageToken without a cursor is not empty")
	}
	sizes := map[int32]int{0: DefaultPageSize, 1: 1, 1000: 1000, 5000: MaxPageSize}
	for in, want := range sizes {
		if p, err := parsePage("s", in, ""); err != nil || p.Size != want {
			t.Errorf("parsePage(size %d) = %+v, %v; want size %d", in, p, err, want)
		}
	}
	bad := []struct {
		field, token string
		size         int32
	}{
		{"page_size", "", -1},
		{"page_token", "%%%", 0},
		{"page_token", nextPageToken("orgs/other", cursor), 0},
		{"page_token", nextPageToken("orgs/acme", "not-a-uuid"), 0},
	}
	for _, b := range bad {
		if _, err := parsePage("orgs/acme", b.size, b.token); reason(err, b.field) == "" {
			t.Errorf("parsePage(%d, %q) = %v, want a validation error on %s", b.size, b.token, err, b.field)
		}
	}
}

func TestCheckRequestID(t *testing.T) {
	t.Parallel()
	if got, err := checkRequestID("0190B0A4-7C2E-7000-8000-000000000001"); err != nil || got != "0190b0a4-7c2e-7000-8000-000000000001" {
		t.Errorf("checkRequestID(upper case) = %q, %v; want the canonical form", got, err)
	}
	if got, err := checkRequestID(""); err != nil || got != "" {
		t.Errorf("checkRequestID(\"\") = %q, %v", got, err)
	}
	if _, err := checkRequestID("retry-1"); reason(err, "request_id") == "" {
		t.Errorf("checkRequestID(not a UUID) = %v, want a validation error", err)
	}
}
