package identity

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/authn"
)

func TestParseProject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		wantOrg string
		wantErr bool
	}{
		{"orgs/acme/projects/web", "orgs/acme", false},
		{"orgs/a-1/projects/p-9x", "orgs/a-1", false},
		{"orgs/acme", "", true},
		{"orgs/acme/projects/web/keys/x", "", true},
		{"orgs/Acme/projects/web", "", true},
		{"orgs/ac/projects/web", "", true},
		{"orgs/1ac/projects/web", "", true},
		{"orgs/acme/project/web", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		org, err := ParseProject(tt.name)
		if org != tt.wantOrg || (err != nil) != tt.wantErr {
			t.Errorf("ParseProject(%q) = %q, %v; want %q, error %v", tt.name, org, err, tt.wantOrg, tt.wantErr)
		}
	}
}

func TestParseKeyName(t *testing.T) {
	t.Parallel()
	const id = "01912345-6789-7abc-8def-0123456789ab"
	tests := []struct {
		name        string
		wantProject string
		wantErr     bool
	}{
		{"orgs/acme/projects/web/keys/" + id, "orgs/acme/projects/web", false},
		{"keys/" + id, "", false},
		{"keys/" + id + "/x", "", true},
		{"orgs/acme/keys/" + id, "", true},
		{"orgs/acme/projects/web/keys/nope", "", true},
		{"orgs/acme/projects/web/keys/01912345-6789-7ABC-8DEF-0123456789AB", "", true},
		{"orgs/acme/projects/web/keys/{" + id + "}", "", true},
		{"projects/web/keys/" + id, "", true},
	}
	for _, tt := range tests {
		project, gotID, err := parseKeyName(tt.name)
		if (err != nil) != tt.wantErr || (!tt.wantErr && (project != tt.wantProject || gotID != id)) {
			t.Errorf("parseKeyName(%q) = %q, %q, %v; want %q, %q, error %v", tt.name, project, gotID, err, tt.wantProject, id, tt.wantErr)
		}
	}
}

func TestOrganizationOf(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"orgs/acme/projects/web/keys/x": "orgs/acme",
		"orgs/acme":                     "orgs/acme",
		"orgs/ACME/projects/web":        "",
		"keys/x":                        "",
		"":                              "",
	} {
		if got := authn.OrganizationOf(name); got != want {
			t.Errorf("OrganizationOf(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestPageToken(t *testing.T) {
	t.Parallel()
	c := Cursor{CreateTime: time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC), ID: "01912345-6789-7abc-8def-0123456789ab"}
	token := encodePageToken("orgs/acme/projects/web", c)
	got, err := decodePageToken("orgs/acme/projects/web", token)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&c, got); diff != "" {
		t.Errorf("cursor mismatch (-want +got):\n%s", diff)
	}
	for name, tok := range map[string]string{
		"another list": encodePageToken("orgs/acme/projects/api", c),
		"not base64":   "!!!",
		"not json":     "bm90IGpzb24",
		"bad id":       encodePageToken("orgs/acme/projects/web", Cursor{ID: "x"}),
	} {
		var verr *ValidationError
		if _, err := decodePageToken("orgs/acme/projects/web", tok); !errors.As(err, &verr) || verr.Field != "page_token" {
			t.Errorf("%s: decodePageToken = %v, want a page_token ValidationError", name, err)
		}
	}
	if got, err := decodePageToken("orgs/acme/projects/web", ""); got != nil || err != nil {
		t.Errorf("empty token = %v, %v; want the first page", got, err)
	}
}

func TestWellFormed(t *testing.T) {
	t.Parallel()
	good := "moat_" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	for key, want := range map[string]bool{
		good:                       true,
		good[:47]:                  false,
		good + "A":                 false,
		"sk_x" + good[4:]:          false,
		"moat_" + good[5:47] + "!": false,
		"":                         false,
	} {
		if got := wellFormed(key); got != want {
			t.Errorf("wellFormed(%q) = %v, want %v", key, got, want)
		}
	}
}
