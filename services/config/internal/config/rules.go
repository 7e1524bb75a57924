package config

import (
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the resources' fields.
const (
	maxDisplayName   = 200  // characters
	maxModel         = 128  // bytes of printable ASCII
	maxUpstreamModel = 256  // bytes of printable ASCII
	maxBaseURL       = 2048 // bytes
)

// OrganizationName returns orgs/{org}.
func OrganizationName(org string) string { return "orgs/" + org }

// ProjectName returns orgs/{org}/projects/{project}.
func ProjectName(org, project string) string { return "orgs/" + org + "/projects/" + project }

// ProviderName returns orgs/{org}/providers/{provider}.
func ProviderName(org, provider string) string { return "orgs/" + org + "/providers/" + provider }

// RouteName returns orgs/{org}/projects/{project}/routes/{route}.
func RouteName(org, project, route string) string {
	return ProjectName(org, project) + "/routes/" + route
}

// ParseOrganizationName returns the {org} of orgs/{org}.
func ParseOrganizationName(name string) (org string, ok bool) {
	ids, ok := parseName(name, "orgs")
	if !ok {
		return "", false
	}
	return ids[0], true
}

// ParseProjectName returns the ids in orgs/{org}/projects/{project}.
func ParseProjectName(name string) (org, project string, ok bool) {
	ids, ok := parseName(name, "orgs", "projects")
	if !ok {
		return "", "", false
	}
	return ids[0], ids[1], true
}

// ParseProviderName returns the ids in orgs/{org}/providers/{provider}.
func ParseProviderName(name string) (org, provider string, ok bool) {
	ids, ok := parseName(name, "orgs", "providers")
	if !ok {
		return "", "", false
	}
	return ids[0], ids[1], true
}

// ParseRouteName returns the ids in orgs/{org}/projects/{project}/routes/{route}.
func ParseRouteName(name string) (org, project, route string, ok bool) {
	ids, ok := parseName(name, "orgs", "projects", "routes")
	if !ok {
		return "", "", "", false
	}
	return ids[0], ids[1], ids[2], true
}

// parseName splits a name made of collection/id pairs and checks every id.
func parseName(name string, collections ...string) ([]string, bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 2*len(collections) {
		return nil, false
	}
	ids := make([]string, len(collections))
	for i, c := range collections {
		if parts[2*i] != c || !validID(parts[2*i+1]) {
			return nil, false
		}
		ids[i] = parts[2*i+1]
	}
	return ids, true
}

// validID reports whether id is 3 to 63 lowercase letters, digits and
// hyphens, starting with a letter and not ending with a hyphen: a DNS label,
// so that ids can appear in hostnames and metric labels unescaped.
func validID(id string) bool {
	if len(id) < 3 || len(id) > 63 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9') || c == '-':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return id[len(id)-1] != '-'
}

const idRule = "must be 3 to 63 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen"

func checkID(field, id string) error {
	if !validID(id) {
		return invalid(field, idRule)
	}
	return nil
}

func checkDisplayName(field, s string) error {
	if !utf8.ValidString(s) {
		return invalid(field, "must be valid UTF-8")
	}
	if utf8.RuneCountInString(s) > maxDisplayName {
		return invalid(field, "must be at most %d characters", maxDisplayName)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "must not contain control characters")
		}
	}
	return nil
}

// printableASCII reports whether s is 1 to max bytes of printable ASCII
// (space included).
func printableASCII(s string, limit int) bool {
	if s == "" || len(s) > limit {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func checkModel(field, s string, limit int) error {
	if !printableASCII(s, limit) {
		return invalid(field, "must be 1 to %d printable ASCII characters", limit)
	}
	return nil
}

// checkBaseURL enforces the write-time rule for provider URLs: an absolute
// http or https URL with a host, and nothing a gateway would have to strip
// or could leak (userinfo, query, fragment). Which addresses a gateway may
// reach is decided when it dials, where the resolved IP is known and the
// installation's SSRF policy applies; checking a hostname's resolution here
// would prove nothing about the address dialled later.
func checkBaseURL(field, s string) error {
	if s == "" {
		return invalid(field, "is required")
	}
	if len(s) > maxBaseURL {
		return invalid(field, "must be at most %d bytes", maxBaseURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid(field, "is not a valid URL")
	}
	switch {
	case (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "":
		return invalid(field, "must be an absolute http or https URL")
	case u.Host == "" || u.Hostname() == "":
		return invalid(field, "must name a host")
	case u.User != nil:
		return invalid(field, "must not contain user information; set the credential instead")
	case u.RawQuery != "" || u.ForceQuery:
		return invalid(field, "must not contain a query")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return invalid(field, "must not contain a fragment")
	}
	return nil
}

// normalizeBaseURL drops trailing slashes, because gateways append each
// API's paths ("/chat/completions", "/messages", "/openai/v1/...").
func normalizeBaseURL(s string) string { return strings.TrimRight(s, "/") }

// Update masks. Each resource lists the paths an update may name and its
// output-only fields, so that a mask naming one of those is refused with a
// precise reason instead of "unknown field". The identifier "name" is
// accepted and ignored: it names the resource being updated, and the REST
// mapping infers a mask from every field of the JSON body, name included,
// when the client sends none.
var (
	organizationMask = mask{
		updatable:  []string{"display_name"},
		outputOnly: []string{"create_time", "update_time"},
	}
	projectMask = organizationMask
	// providerMask takes the settings messages whole ("vertex", which
	// clears them when the request leaves them unset) or field by field
	// ("vertex.project"), which is what the REST mapping infers from a JSON
	// body that sets one of their fields.
	providerMask = mask{
		updatable: []string{"display_name", "type", "base_url", "credential",
			"azure", "azure.api_version", "vertex", "vertex.project", "vertex.location", "bedrock", "bedrock.region"},
		outputOnly: []string{"has_credential", "create_time", "update_time"},
	}
	routeMask = mask{
		updatable:  []string{"model", "provider", "upstream_model"},
		outputOnly: []string{"create_time", "update_time"},
	}
)

type mask struct{ updatable, outputOnly []string }

// check validates paths against m and returns the fields to change.
func (m mask) check(field string, paths []string) (map[string]bool, error) {
	if len(paths) == 0 {
		return nil, invalid(field, "is required: name the fields to change")
	}
	set := make(map[string]bool, len(paths))
	for _, p := range paths {
		switch {
		case p == "name":
		case p == "*":
			return nil, invalid(field, "a wildcard is not supported: name the fields to change")
		case slices.Contains(m.outputOnly, p):
			return nil, invalid(field, "%q is output only", p)
		case !slices.Contains(m.updatable, p):
			return nil, invalid(field, "unknown field %q", p)
		default:
			set[p] = true
		}
	}
	if len(set) == 0 {
		return nil, invalid(field, "names no field that can change")
	}
	return set, nil
}
