package credential

// This file holds the credential of an Azure OpenAI provider configured
// with Microsoft Entra ID client credentials: an application's tenant,
// client id and client secret, exchanged by azidentity for access tokens
// in the background (refresher), so that a request only reads the current
// token.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// AzureScope is the scope the Entra ID access tokens are asked for: Azure
// OpenAI (Azure AI services) accepts tokens of this audience.
const AzureScope = "https://cognitiveservices.azure.com/.default"

// ErrInvalidEntraCredential is wrapped by every error NewAzure returns for
// a credential it refuses.
var ErrInvalidEntraCredential = errors.New("azure credential: invalid Entra ID client credentials")

// Azure is the Entra ID access token of an application (a service
// principal) for Azure OpenAI, refreshed in the background by Run. Token
// is safe for concurrent use and does no I/O.
type Azure struct {
	*refresher
	tenantID, clientID string
	secret             string
	authority          string // the Entra ID authority host, an https URL
	client             *http.Client
}

// entraCredential is the JSON form of Entra ID client credentials, as
// config accepts it.
type entraCredential struct {
	TenantID     string `json:"tenantId"`
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// NewAzure reads Entra ID client credentials, the JSON object
// {"tenantId", "clientId", "clientSecret"} config accepts, and returns
// their credential, without a token until Run gets one. Tokens are asked
// for AzureScope from authorityHost (an https URL; empty means the Azure
// public cloud's, https://login.microsoftonline.com/) through client,
// which should be the gateway's egress-checked client. NewAzure itself
// does no I/O, and ctx only lets a caller give up before it starts. An
// error for a refused credential wraps ErrInvalidEntraCredential and
// quotes nothing of it.
func NewAzure(ctx context.Context, credentialJSON []byte, client *http.Client, authorityHost string) (*Azure, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("azure credential: %w", err)
	}
	if client == nil {
		return nil, errors.New("azure credential: an http.Client is required")
	}
	if authorityHost == "" {
		authorityHost = cloud.AzurePublic.ActiveDirectoryAuthorityHost
	}
	if u, err := url.Parse(authorityHost); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("azure credential: the Entra ID authority host must be an https URL")
	}
	var c entraCredential
	dec := json.NewDecoder(bytes.NewReader(credentialJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || !errors.Is(dec.Decode(&struct{}{}), io.EOF) {
		// The decoder's message may quote the input: say only what shape
		// is expected.
		return nil, invalidEntra(`it is not one JSON object {"tenantId", "clientId", "clientSecret"} of strings`)
	}
	switch {
	case c.TenantID == "":
		return nil, invalidEntra("tenantId is missing")
	case c.ClientID == "":
		return nil, invalidEntra("clientId is missing")
	case c.ClientSecret == "":
		return nil, invalidEntra("clientSecret is missing")
	}
	a := &Azure{tenantID: c.TenantID, clientID: c.ClientID, secret: c.ClientSecret, authority: authorityHost, client: client}
	// azidentity checks the tenant id (a path segment of the authority);
	// checking it here makes a bad one fail at configuration time.
	if _, err := a.credential(client); err != nil {
		return nil, invalidEntra("tenantId must be a tenant id or domain")
	}
	a.refresher = newRefresher("azure credential", a.fetch)
	return a, nil
}

func invalidEntra(why string) error { return fmt.Errorf("%w: %s", ErrInvalidEntraCredential, why) }

// credential is a new azidentity credential sending through t.
func (a *Azure) credential(t policy.Transporter) (*azidentity.ClientSecretCredential, error) {
	return azidentity.NewClientSecretCredential(a.tenantID, a.clientID, a.secret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			// Set always, so that AZURE_AUTHORITY_HOST does not silently
			// move the gateway to another cloud.
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: a.authority},
			Transport: t,
			// The refresher retries, with its own backoff.
			Retry: policy.RetryOptions{MaxRetries: -1},
		},
		// The authority is the public cloud's, a sovereign cloud's or
		// one the operator named: asking login.microsoftonline.com to
		// validate it would only add a request.
		DisableInstanceDiscovery: true,
	})
}

// String names the credential by its tenant and client id, so that
// printing or logging an *Azure shows nothing secret.
func (a *Azure) String() string {
	return "azure entra id application " + a.clientID + " (tenant " + a.tenantID + ")"
}

// GoString is String, for %#v.
func (a *Azure) GoString() string { return a.String() }

// LogValue is String, for log/slog.
func (a *Azure) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Token returns the current access token. It does no I/O: the token is
// the one Run last obtained. Before the first one it returns an error
// wrapping ErrNoToken, and once the token is expired (or within seconds
// of it) one wrapping ErrTokenExpired; both say why the last refresh
// failed, if it did.
func (a *Azure) Token() (string, error) { return a.token() }

// Ready is closed once Run has obtained the first token.
func (a *Azure) Ready() <-chan struct{} { return a.ready }

// Run obtains a token at once and keeps it fresh until ctx is done, as
// (*Google).Run does: at 80 % of each token's lifetime, failures retried
// with jittered exponential backoff while Token keeps returning the
// previous token until it expires. Run returns nil when ctx is done, and
// an error only if it is already running.
func (a *Azure) Run(ctx context.Context) error { return a.run(ctx) }

// fetch gets a token and its lifetime. Each fetch uses a new azidentity
// credential: one credential's MSAL cache would hand back the token it
// holds until five minutes before its expiry, so that refreshing at 80 %
// of the lifetime, and retrying before the token runs out, would do
// nothing. A new one costs one more request, for the tenant's OpenID
// configuration.
func (a *Azure) fetch(ctx context.Context) (string, time.Duration, error) {
	c, sendErr := withContext(a.client, ctx)
	cred, err := a.credential(c)
	if err != nil {
		return "", 0, errors.New("azidentity refused the credential")
	}
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{AzureScope}})
	if err != nil {
		return "", 0, describeEntra(ctx, err, *sendErr)
	}
	// The expiry is on the real clock.
	return tok.Token, time.Until(tok.ExpiresOn), nil
}

// describeEntra says why a token request failed without quoting what
// could hold a secret: azidentity's error prints the endpoint's answer
// whole, which is reduced to its status and OAuth error code. sendErr is
// the transport's error, if it failed.
func describeEntra(ctx context.Context, err, sendErr error) error {
	var af *azidentity.AuthenticationFailedError
	if errors.As(err, &af) && af.RawResponse != nil {
		msg := "the Entra ID endpoint answered " + strconv.Itoa(af.RawResponse.StatusCode)
		if body, err := runtime.Payload(af.RawResponse); err == nil {
			if code := oauthErrorCode(body); code != "" {
				msg += " (" + code + ")"
			}
		}
		return errors.New(msg)
	}
	if ctx.Err() != nil {
		return errors.New("the token request timed out")
	}
	if sendErr != nil {
		return errors.New("the Entra ID endpoint is unreachable: " + bound(sendErr.Error()))
	}
	return errors.New("the Entra ID endpoint's answer is not a token")
}
