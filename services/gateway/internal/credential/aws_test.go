package credential

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/moat-ai/moat/libs/providertest"
)

// signedAt is the fixed signing time of the tests.
var signedAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

const testBody = `{"messages":[{"role":"user","content":[{"text":"hi"}]}]}`

// bedrockRequest is a Converse request as the gateway builds it, before
// signing.
func bedrockRequest(t testing.TB) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost,
		"https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-v1:0/converse", strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req
}

func TestAWSStaticKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, json string
		creds      aws.Credentials
	}{
		{"long-term keys", `{"accessKeyId":"AKIDEXAMPLE","secretAccessKey":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}`,
			aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}},
		{"session keys", ` {"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"secret","sessionToken":"FwoGZXIvYXdzEXAMPLE"} `,
			aws.Credentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "secret", SessionToken: "FwoGZXIvYXdzEXAMPLE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := NewAWS(context.Background(), []byte(tt.json), "eu-west-1", nil)
			if err != nil {
				t.Fatal(err)
			}
			got := bedrockRequest(t)
			if err := a.Sign(got, []byte(testBody), signedAt); err != nil {
				t.Fatal(err)
			}
			// The SDK's own signer, given the same keys, time and body, is
			// the reference.
			want := bedrockRequest(t)
			sum := sha256.Sum256([]byte(testBody))
			if err := v4.NewSigner().SignHTTP(context.Background(), tt.creds, want, hex.EncodeToString(sum[:]), "bedrock", "eu-west-1", signedAt); err != nil {
				t.Fatal(err)
			}
			for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
				if got.Header.Get(h) != want.Header.Get(h) {
					t.Errorf("%s = %q, want %q", h, got.Header.Get(h), want.Header.Get(h))
				}
			}
			v, ok := providertest.ParseSigV4(got.Header.Get("Authorization"))
			if !ok {
				t.Fatalf("the mock cannot parse %q", got.Header.Get("Authorization"))
			}
			wantHeaders := []string{"accept", "content-length", "content-type", "host", "x-amz-date"}
			if tt.creds.SessionToken != "" {
				wantHeaders = append(wantHeaders, "x-amz-security-token")
			}
			wantV := providertest.SigV4{AccessKeyID: tt.creds.AccessKeyID, Date: "20250102", Region: "eu-west-1", Service: "bedrock",
				SignedHeaders: wantHeaders, Signature: v.Signature}
			if diff := cmp.Diff(wantV, v); diff != "" {
				t.Errorf("signature mismatch (-want +got):\n%s", diff)
			}
			if strings.Contains(fmt.Sprintf("%v %+v %#v", a, a, a), tt.creds.SecretAccessKey) {
				t.Errorf("formatting the credential shows its secret")
			}
		})
	}
}

// TestAWSSignatureVector pins one signature, so that a change in how the
// request is signed (a header added to or dropped from the signature) is
// seen even if it stays consistent with the SDK.
func TestAWSSignatureVector(t *testing.T) {
	t.Parallel()
	a, err := NewAWS(context.Background(), []byte(`{"accessKeyId":"AKIDEXAMPLE","secretAccessKey":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}`), "us-east-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Sign(req, []byte("{}"), signedAt); err != nil {
		t.Fatal(err)
	}
	const want = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, SignedHeaders=content-length;host;x-amz-date, Signature="
	if got := req.Header.Get("Authorization"); !strings.HasPrefix(got, want) || len(got) != len(want)+64 {
		t.Errorf("Authorization = %q, want %q and 64 hex digits", got, want)
	}
	if got := req.Header.Get("X-Amz-Date"); got != "20250102T030405Z" {
		t.Errorf("X-Amz-Date = %q", got)
	}
}

func TestAWSAPIKey(t *testing.T) {
	t.Parallel()
	const key = "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxlOmV4YW1wbGU="
	a, err := NewAWS(context.Background(), []byte(key+"\n"), "us-west-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	req := bedrockRequest(t)
	if err := a.Sign(req, []byte(testBody), signedAt); err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Authorization"); got != "Bearer "+key {
		t.Errorf("Authorization = %q, want the bearer key", got)
	}
	if req.Header.Get("X-Amz-Date") != "" {
		t.Errorf("an API key request was also signed")
	}
	if s := fmt.Sprintf("%v %+v %#v", a, a, a); strings.Contains(s, key) {
		t.Errorf("formatting the credential shows the key: %s", s)
	}
	// Run has nothing to refresh and returns when told.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestAWSInvalid(t *testing.T) {
	t.Parallel()
	const secret = "S3CRETvalue"
	tests := []struct {
		name, cred, region string
	}{
		{"not JSON", `{"accessKeyId":"AKID","secretAccessKey":"` + secret + `"`, "us-east-1"},
		{"unknown member", `{"accessKeyId":"AKID","secretKey":"` + secret + `"}`, "us-east-1"},
		{"wrong type", `{"accessKeyId":"AKID","secretAccessKey":["` + secret + `"]}`, "us-east-1"},
		{"missing secret", `{"accessKeyId":"AKID","sessionToken":"` + secret + `"}`, "us-east-1"},
		{"no region", `{"accessKeyId":"AKID","secretAccessKey":"` + secret + `"}`, ""},
		{"API key with a space", secret + " " + secret, "us-east-1"},
		{"API key with a newline inside", secret + "\r\nX-Injected: 1", "us-east-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := NewAWS(context.Background(), []byte(tt.cred), tt.region, nil)
			if err == nil {
				t.Fatalf("NewAWS = %v, want an error", a)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error quotes the secret: %v", err)
			}
		})
	}
}

// TestAWSDefaultChain reads keys from the environment, as the default
// chain does first, with no shared files and no instance metadata.
func TestAWSDefaultChain(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CA_BUNDLE", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	t.Setenv("AWS_SESSION_TOKEN", "envtoken")
	t.Setenv("AWS_REGION", "ap-south-1")
	a, err := NewAWS(context.Background(), nil, "", &http.Client{Transport: failingTransport{}})
	if err != nil {
		t.Fatal(err)
	}
	req := bedrockRequest(t)
	if err := a.Sign(req, []byte(testBody), signedAt); err != nil {
		t.Fatal(err)
	}
	v, ok := providertest.ParseSigV4(req.Header.Get("Authorization"))
	if !ok || v.AccessKeyID != "AKIDENV" || v.Region != "ap-south-1" || v.Service != "bedrock" {
		t.Errorf("signature %+v (%v), want AKIDENV in ap-south-1 for bedrock", v, ok)
	}
	if got := req.Header.Get("X-Amz-Security-Token"); got != "envtoken" {
		t.Errorf("X-Amz-Security-Token = %q", got)
	}
	if a.Region() != "ap-south-1" {
		t.Errorf("Region() = %q", a.Region())
	}
}

// TestAWSDefaultChainEmpty checks that a chain with nothing to find fails
// at construction, without reaching the network.
func TestAWSDefaultChainEmpty(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_PROFILE", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := NewAWS(ctx, nil, "us-east-1", &http.Client{Transport: failingTransport{}})
	if err == nil {
		t.Fatalf("NewAWS = %v, want an error", a)
	}
	t.Logf("NewAWS: %v", err)
	// A CA bundle the SDK cannot add to the gateway's client is named.
	bundle := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundle, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CA_BUNDLE", bundle)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
	if _, err := NewAWS(ctx, nil, "us-east-1", &http.Client{}); err == nil || !strings.Contains(err.Error(), "AWS_CA_BUNDLE") {
		t.Errorf("NewAWS with a CA bundle and a client = %v, want an error naming AWS_CA_BUNDLE", err)
	}
}

// failingTransport refuses every request: tests reach no network.
type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in tests")
}

// rotatingProvider hands out temporary keys that expire after ttl, a new
// key id each time, announcing each call on calls.
type rotatingProvider struct {
	n     atomic.Int64
	ttl   time.Duration
	fail  atomic.Bool
	calls chan int64
}

func (p *rotatingProvider) Retrieve(context.Context) (aws.Credentials, error) {
	n := p.n.Add(1)
	defer func() { p.calls <- n }()
	if p.fail.Load() {
		return aws.Credentials{}, errors.New("sts unavailable")
	}
	return aws.Credentials{AccessKeyID: fmt.Sprintf("ASIA%d", n), SecretAccessKey: "secret", SessionToken: "token",
		CanExpire: true, Expires: time.Now().Add(p.ttl)}, nil
}

func TestAWSRefresh(t *testing.T) {
	t.Parallel()
	p := &rotatingProvider{ttl: 300 * time.Millisecond, calls: make(chan int64, 16)}
	sched := awsSchedule{before: 200 * time.Millisecond, retryMin: 10 * time.Millisecond, retryMax: 20 * time.Millisecond, floor: time.Millisecond}
	a, err := newAWS(context.Background(), "test", p, "us-east-1", sched)
	if err != nil {
		t.Fatal(err)
	}
	<-p.calls // the retrieval at construction
	keyID := func() string {
		req := bedrockRequest(t)
		if err := a.Sign(req, []byte(testBody), time.Now()); err != nil {
			t.Fatal(err)
		}
		v, _ := providertest.ParseSigV4(req.Header.Get("Authorization"))
		return v.AccessKeyID
	}
	if got := keyID(); got != "ASIA1" {
		t.Fatalf("first key %q, want ASIA1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitCall := func(want int64) {
		t.Helper()
		select {
		case n := <-p.calls:
			if n != want {
				t.Fatalf("call %d, want %d", n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no refresh call %d", want)
		}
	}
	// Refreshed about 100 ms in, well before the keys expire.
	waitCall(2)
	waitFor(t, func() bool { return keyID() == "ASIA2" })
	// A failing refresh is reported and retried; the keys held stay in use
	// until they expire.
	p.fail.Store(true)
	waitCall(3)
	waitFor(t, func() bool { return a.LastError() != nil })
	if err := a.LastError(); !strings.Contains(err.Error(), "sts unavailable") {
		t.Errorf("LastError() = %v", err)
	}
	waitCall(4)
	if err := a.Sign(bedrockRequest(t), nil, time.Now().Add(time.Hour)); !errors.Is(err, ErrAWSExpired) {
		t.Errorf("Sign after the expiry = %v, want ErrAWSExpired", err)
	}
	p.fail.Store(false)
	waitFor(t, func() bool { return a.LastError() == nil && keyID() != "ASIA2" })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAWSMock sends signed and keyed requests to the mock Bedrock, which
// requires an Authorization header and checks API keys.
func TestAWSMock(t *testing.T) {
	t.Parallel()
	const key = "ABSKbW9ja2tleQ=="
	srv := providertest.New(providertest.Config{Credential: key})
	send := func(a *AWS) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/model/anthropic.claude-v2/converse", bytes.NewReader([]byte(testBody)))
		if err := a.Sign(req, []byte(testBody), time.Now()); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	signed, err := NewAWS(context.Background(), []byte(`{"accessKeyId":"AKID","secretAccessKey":"s"}`), "us-east-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	keyed, err := NewAWS(context.Background(), []byte(key), "us-east-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := NewAWS(context.Background(), []byte("ABSKd3Jvbmc="), "us-east-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tt := range map[string]struct {
		a    *AWS
		want int
	}{"signed": {signed, http.StatusOK}, "api key": {keyed, http.StatusOK}, "wrong api key": {wrong, http.StatusForbidden}} {
		if rec := send(tt.a); rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d: %s", name, rec.Code, tt.want, rec.Body)
		}
	}
}
