package keycloaktest

import (
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		html string
		want page
	}{
		{
			name: "login form after a failed attempt",
			html: `<html><head><title>Sign in to corp</title></head><body>
				<h1 id="kc-page-title">Sign in to your account</h1>
				<form id="kc-form-login" action="http://kc/realms/corp/login-actions/authenticate?session_code=x&amp;execution=y" method="post">
				<input id="username" name="username" value="alice" type="text">
				<input id="password" name="password" type="password">
				<span id="input-error" class="err"><span>Invalid username
				or password.</span></span>
				<input type="checkbox" name="rememberMe">
				<input type="hidden" name="credentialId" value="">
				<input type="submit" name="login" value="Sign In">
				</form></body></html>`,
			want: page{
				title: "Sign in to corp", message: "Invalid username or password.",
				forms: []htmlForm{{
					id: "kc-form-login", action: "http://kc/realms/corp/login-actions/authenticate?session_code=x&execution=y",
					values: url.Values{"username": {"alice"}, "password": {""}, "credentialId": {""}}, password: true,
				}},
			},
		},
		{
			name: "SAML POST binding",
			html: `<HTML><HEAD><TITLE>Authentication Redirect</TITLE></HEAD><BODY Onload="document.forms[0].submit()">
				<FORM METHOD="POST" ACTION="http://kc/realms/moat/broker/corp/endpoint">
				<INPUT TYPE="HIDDEN" NAME="SAMLResponse" VALUE="PHNhbWw+"/><INPUT TYPE="HIDDEN" NAME="RelayState" VALUE="r1"/>
				<NOSCRIPT><INPUT TYPE="SUBMIT" VALUE="CONTINUE"/></NOSCRIPT></FORM></BODY></HTML>`,
			want: page{
				title: "Authentication Redirect",
				forms: []htmlForm{{action: "http://kc/realms/moat/broker/corp/endpoint", values: url.Values{"SAMLResponse": {"PHNhbWw+"}, "RelayState": {"r1"}}}},
			},
		},
		{
			name: "error page",
			html: `<title>Sign in to moat</title><div id="kc-error-message"><p class="instruction">Invalid parameter: redirect_uri</p></div>`,
			want: page{title: "Sign in to moat", message: "Invalid parameter: redirect_uri"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := parse([]byte(tt.html))
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(page{}, htmlForm{})); diff != "" {
				t.Errorf("parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBareDropsQueryAndFragment(t *testing.T) {
	t.Parallel()
	if got, want := bare("http://kc/realms/x/cb?code=secret&state=s#frag"), "http://kc/realms/x/cb"; got != want {
		t.Errorf("bare = %q, want %q", got, want)
	}
}
