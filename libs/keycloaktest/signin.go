package keycloaktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/html"
)

// maxSteps bounds the requests of one sign-in; a brokered SAML sign-in
// takes about ten.
const maxSteps = 30

// SignIn signs username in at the Keycloak realm issuer as a browser would,
// with the authorization-code flow and PKCE for the public client
// clientID, and returns the access token. It follows every redirect by
// hand with one cookie jar, posts the credentials to the first login form
// it meets, posts auto-submitting SAML forms (SAMLRequest, SAMLResponse)
// and the broker's profile review form as they are, and exchanges the code
// that reaches redirectURI. extra adds authorization parameters, such as
// kc_idp_hint=<alias> to go straight to a brokered identity provider, whose
// login form then receives the credentials.
//
// An error names the step at which the flow stopped (method, URL without
// its query, status, page title and Keycloak's message) and never carries
// the password, codes or tokens.
func SignIn(ctx context.Context, issuer, clientID, redirectURI, username, password string, extra url.Values) (accessToken string, err error) {
	issuer = strings.TrimSuffix(issuer, "/")
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", fmt.Errorf("sign in: cookie jar: %w", err)
	}
	f := &flow{
		client: &http.Client{
			Jar:           jar,
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		username: username, password: password,
	}
	verifier := random()
	challenge := sha256.Sum256([]byte(verifier))
	state := random()
	q := url.Values{
		"client_id": {clientID}, "response_type": {"code"}, "scope": {"openid"},
		"redirect_uri": {redirectURI}, "state": {state},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(challenge[:])}, "code_challenge_method": {"S256"},
	}
	maps.Copy(q, extra)
	callback, err := f.run(ctx, issuer+"/protocol/openid-connect/auth?"+q.Encode(), redirectURI)
	if err != nil {
		return "", fmt.Errorf("sign in as %s: %w", username, err)
	}
	cq := callback.Query()
	if e := cq.Get("error"); e != "" {
		return "", fmt.Errorf("sign in as %s: redirected with error %s: %s", username, e, cq.Get("error_description"))
	}
	if cq.Get("state") != state {
		return "", fmt.Errorf("sign in as %s: the redirect carries another state", username)
	}
	code := cq.Get("code")
	if code == "" {
		return "", fmt.Errorf("sign in as %s: the redirect carries no code", username)
	}
	resp, err := f.send(ctx, http.MethodPost, issuer+"/protocol/openid-connect/token", url.Values{
		"grant_type": {"authorization_code"}, "client_id": {clientID}, "code": {code},
		"redirect_uri": {redirectURI}, "code_verifier": {verifier},
	})
	if err != nil {
		return "", fmt.Errorf("sign in as %s: exchange the code: %w", username, err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken      string `json:"access_token"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("sign in as %s: the code exchange answered %d %s %s, no access token", username, resp.StatusCode, tok.Error, tok.ErrorDescription)
	}
	return tok.AccessToken, nil
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it aborts the program instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

type flow struct {
	client             *http.Client
	username, password string
	credentialsPosted  bool
	posted             map[string]bool // form ids already submitted
}

// run follows the flow from start until a redirect to redirectURI, which
// it returns.
func (f *flow) run(ctx context.Context, start, redirectURI string) (*url.URL, error) {
	target, err := url.Parse(redirectURI)
	if err != nil {
		return nil, fmt.Errorf("redirect URI: %w", err)
	}
	method, u, form := http.MethodGet, start, url.Values(nil)
	for step := 1; step <= maxSteps; step++ {
		resp, err := f.send(ctx, method, u, form)
		if err != nil {
			return nil, fmt.Errorf("step %d (%s %s): %w", step, method, bare(u), err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("step %d (%s %s): read the answer: %w", step, method, bare(u), err)
		}
		stopped := func(why string) error {
			p := parse(body)
			return fmt.Errorf("stopped at step %d (%s %s): %s; status %d, page %q, message %q",
				step, method, bare(u), why, resp.StatusCode, p.title, p.message)
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
			if err != nil || resp.Header.Get("Location") == "" {
				return nil, stopped("a redirect without a valid location")
			}
			if loc.Scheme == target.Scheme && loc.Host == target.Host && loc.Path == target.Path {
				return loc, nil
			}
			method, u, form = http.MethodGet, loc.String(), nil
		case resp.StatusCode == http.StatusOK:
			next, why := f.submit(parse(body))
			if next == nil {
				return nil, stopped(why)
			}
			action, err := resp.Request.URL.Parse(next.action)
			if err != nil {
				return nil, stopped("a form without a valid action")
			}
			method, u, form = http.MethodPost, action.String(), next.values
		default:
			return nil, stopped("an unexpected status")
		}
	}
	return nil, fmt.Errorf("no redirect to %s after %d steps", bare(redirectURI), maxSteps)
}

// submit chooses the form of p to post and fills it in, or says why there
// is none.
func (f *flow) submit(p page) (*htmlForm, string) {
	if f.posted == nil {
		f.posted = map[string]bool{}
	}
	for _, fm := range p.forms {
		switch {
		case fm.password:
			if f.credentialsPosted {
				return nil, "a login form again after the credentials"
			}
			f.credentialsPosted = true
			fm.values.Set("username", f.username)
			fm.values.Set("password", f.password)
			return &fm, ""
		case fm.values.Has("SAMLRequest") || fm.values.Has("SAMLResponse"):
			return &fm, ""
		case fm.id == "kc-idp-review-profile-form" || fm.id == "kc-update-profile-form":
			// The broker's first-login profile review, already filled in
			// from the identity provider; a second one means Keycloak
			// wants something the provider did not give.
			if f.posted[fm.id] {
				return nil, "the profile review again: the identity provider's profile is incomplete"
			}
			f.posted[fm.id] = true
			return &fm, ""
		}
	}
	return nil, "a page SignIn does not fill in"
}

// bare is u without its query and fragment, which carry codes and session
// state.
func bare(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.RawQuery, p.Fragment = "", ""
	return p.String()
}

func (f *flow) send(ctx context.Context, method, u string, form url.Values) (*http.Response, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// The transport's error repeats the URL, query included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, err
	}
	return resp, nil
}

// page is what SignIn reads from an HTML page.
type page struct {
	title   string
	message string // Keycloak's error or feedback text
	forms   []htmlForm
}

type htmlForm struct {
	id, action string
	values     url.Values // every named input with its value
	password   bool       // has a password input
}

// messageIDs are the elements where Keycloak's themes put what went wrong.
var messageIDs = map[string]bool{"input-error": true, "kc-error-message": true, "input-error-username": true}

func parse(body []byte) page {
	var p page
	z := html.NewTokenizer(bytes.NewReader(body))
	var form *htmlForm
	var capture string // tag whose text is being captured
	var depth int
	var text *string
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if form != nil {
				p.forms = append(p.forms, *form)
			}
			p.title, p.message = strings.Join(strings.Fields(p.title), " "), strings.Join(strings.Fields(p.message), " ")
			return p
		case html.TextToken:
			if text != nil {
				*text += string(z.Text()) + " "
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			attr := func(k string) string {
				for _, a := range tok.Attr {
					if a.Key == k {
						return a.Val
					}
				}
				return ""
			}
			if capture != "" && tok.Data == capture && tt == html.StartTagToken {
				depth++
			}
			switch {
			case tok.Data == "title" && text == nil:
				capture, depth, text = "title", 1, &p.title
			case messageIDs[attr("id")] && text == nil && tt == html.StartTagToken:
				capture, depth, text = tok.Data, 1, &p.message
			case tok.Data == "form":
				if form != nil {
					p.forms = append(p.forms, *form)
				}
				form = &htmlForm{id: attr("id"), action: attr("action"), values: url.Values{}}
			case tok.Data == "input" && form != nil:
				if attr("type") == "password" {
					form.password = true
				}
				if name := attr("name"); name != "" && attr("type") != "submit" && attr("type") != "checkbox" {
					form.values.Set(name, attr("value"))
				}
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if capture != "" && string(name) == capture {
				if depth--; depth == 0 {
					capture, text = "", nil
				}
			}
			if string(name) == "form" && form != nil {
				p.forms = append(p.forms, *form)
				form = nil
			}
		}
	}
}
