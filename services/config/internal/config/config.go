// Package config holds the desired state of every organization: the
// resources (organizations, projects, providers, routes), the rules they
// obey, and the use cases that change them. Every change is versioned from
// one counter so that gateways can follow the state as a snapshot followed
// by changes, and every attempted change is audited.
//
// The package knows neither gRPC nor PostgreSQL: the grpcapi package maps
// the API onto Service, and the postgres package implements Store.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Organization is a tenant. Everything else belongs to one.
type Organization struct {
	// Name is the resource name, orgs/{org}.
	Name        string
	DisplayName string
	CreateTime  time.Time
	UpdateTime  time.Time
	// Version is the configuration version of the organization's last change.
	Version int64
}

// Project groups the keys, routes and usage of one team or application.
type Project struct {
	// Name is the resource name, orgs/{org}/projects/{project}.
	Name        string
	DisplayName string
	CreateTime  time.Time
	UpdateTime  time.Time
	Version     int64
}

// ProviderType is the API a provider speaks.
type ProviderType string

// The provider types. The values are what the database stores.
const (
	// ProviderOpenAICompatible is the OpenAI chat-completions API of
	// compatible servers, at a base URL the admin sets.
	ProviderOpenAICompatible ProviderType = "openai_compatible"
	// ProviderOpenAI is OpenAI's own API.
	ProviderOpenAI ProviderType = "openai"
	// ProviderAzureOpenAI is Azure OpenAI, at the admin's resource endpoint.
	ProviderAzureOpenAI ProviderType = "azure_openai"
	// ProviderAnthropic is Anthropic's Messages API.
	ProviderAnthropic ProviderType = "anthropic"
	// ProviderGemini is the Gemini API of Google AI Studio.
	ProviderGemini ProviderType = "gemini"
	// ProviderVertexAI is Google Cloud Vertex AI.
	ProviderVertexAI ProviderType = "vertex_ai"
	// ProviderBedrock is Amazon Bedrock's runtime API.
	ProviderBedrock ProviderType = "bedrock"
)

// Provider is a model provider an organization configured. Its credential
// exists in this package only sealed: the plaintext is sealed by Service on
// the way in and never comes back out.
type Provider struct {
	// Name is the resource name, orgs/{org}/providers/{provider}.
	Name        string
	DisplayName string
	Type        ProviderType
	// BaseURL is the API base URL as the admin set it. It is empty when the
	// type has a default endpoint and the admin set none; gateways apply
	// the default, so that it follows the Vertex location or the Bedrock
	// region.
	BaseURL string
	// Azure, Vertex and Bedrock are the settings of the type of the same
	// name; at most the one of the provider's type is set.
	Azure   *AzureSettings
	Vertex  *VertexSettings
	Bedrock *BedrockSettings
	// Credential is the sealed credential, nil when the provider has none.
	Credential *Sealed
	CreateTime time.Time
	UpdateTime time.Time
	Version    int64
}

// AzureSettings are the settings of an Azure OpenAI provider.
type AzureSettings struct {
	// APIVersion is the api-version, e.g. 2024-10-21; empty means the
	// versionless v1 API.
	APIVersion string
}

// VertexSettings are the settings of a Vertex AI provider.
type VertexSettings struct {
	Project  string
	Location string
}

// BedrockSettings are the settings of a Bedrock provider.
type BedrockSettings struct {
	Region string
}

// Sealed is a secret under envelope encryption: Ciphertext is the secret
// encrypted with a random data key, WrappedKey that data key encrypted with
// the key-encryption key named KEKID.
type Sealed struct {
	KEKID      string
	WrappedKey []byte
	Ciphertext []byte
}

// Route maps the logical model name a client sends to a provider of the
// same organization and the model name that provider knows.
type Route struct {
	// Name is the resource name, orgs/{org}/projects/{project}/routes/{route}.
	Name string
	// Model is the logical model name, unique within the project.
	Model string
	// Provider is the provider's resource name, in the route's organization.
	Provider      string
	UpstreamModel string
	CreateTime    time.Time
	UpdateTime    time.Time
	Version       int64
}

// Snapshot is the whole live configuration at one version, as gateways need
// it: parents come before their children in each list, and the lists are
// meant to be applied in field order.
type Snapshot struct {
	Version       int64
	Organizations []Organization
	Projects      []Project
	Providers     []Provider
	Routes        []Route
}

// Change is one resource changed after some version: exactly one of the
// resource fields is set for an upsert; Deleted is set, with Name, for a
// deletion.
type Change struct {
	Version      int64
	Name         string
	Deleted      bool
	Organization *Organization
	Project      *Project
	Provider     *Provider
	Route        *Route
}

// Errors callers branch on. The grpcapi package maps each to a status.
var (
	// ErrNotFound reports a resource that does not exist (or was deleted).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists reports a name or a route model already taken. The
	// name of a deleted organization or project stays taken (see Retired).
	ErrAlreadyExists = errors.New("already exists")
	// ErrInUse reports a deletion refused because live resources depend on
	// the target.
	ErrInUse = errors.New("in use")
	// ErrUnavailable reports that the database cannot be reached; the
	// caller may retry.
	ErrUnavailable = errors.New("configuration store unavailable")
)

// ValidationError reports a request field that breaks a rule. Field is the
// field's path in the request, as the API names it.
type ValidationError struct{ Field, Reason string }

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// NotFound returns the error for a missing resource, e.g. "project
// orgs/a/projects/b: not found". Stores use it so that messages read the
// same whoever reports them.
func NotFound(kind, name string) error {
	return fmt.Errorf("%s %s: %w", kind, name, ErrNotFound)
}

// Retired returns the error, wrapping ErrAlreadyExists, for a create that
// names a deleted organization or project. Their ids are never used again:
// other services key their state by these names (identity its memberships
// and API keys, billing its ledger, audit its log), and a new tenant under
// an old name would inherit the old tenant's members, keys, usage and
// history. The message names only name, the id the caller sent.
func Retired(kind, name string) error {
	return fmt.Errorf("%s %s: %w: the id belonged to a deleted %s, and %s ids are never reused; choose another id",
		kind, name, ErrAlreadyExists, kind, kind)
}

// Outcome is how an audited action ended.
type Outcome int

// The outcomes of moat.audit.v1.AuditEvent.
const (
	OutcomeAllowed Outcome = iota + 1 // authorized and done
	OutcomeDenied                     // refused: unauthenticated, forbidden, invalid or unknown target
	OutcomeFailed                     // authorized, but it failed
)

// AuditRecord is one audited action, allowed or denied. It never carries
// request content beyond resource names, so it can hold no secret.
type AuditRecord struct {
	// Organization is the organization concerned, orgs/{org}, or "" for a
	// platform-level action.
	Organization string
	// Actor is the principal, keys/{key_id}, or "anonymous".
	Actor string
	// Action is the fully qualified RPC name,
	// moat.config.v1.ConfigService.CreateProject.
	Action string
	// Target is the resource acted on, or its parent for a refused create.
	Target  string
	Outcome Outcome
	// Status is the canonical gRPC code name the caller received, e.g. OK.
	Status        string
	SourceAddress string
	// RequestID is the AIP-155 request id, or the trace id.
	RequestID string
	Time      time.Time
}

// WithTarget returns r about target, with the organization derived from it.
func (r AuditRecord) WithTarget(target string) AuditRecord {
	r.Target = target
	r.Organization = OrganizationOf(target)
	return r
}

// OrganizationOf returns the organization a resource name belongs to,
// orgs/{org}, or "" when name does not start with a valid organization.
func OrganizationOf(name string) string {
	rest, ok := strings.CutPrefix(name, "orgs/")
	if !ok {
		return ""
	}
	org, _, _ := strings.Cut(rest, "/")
	if !validID(org) {
		return ""
	}
	return OrganizationName(org)
}
