package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/events/eventstest"
	"github.com/moat-ai/moat/libs/providertest"
	"github.com/moat-ai/moat/libs/secretbox"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	gatewayv1 "github.com/moat-ai/moat/proto/gen/go/moat/gateway/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/gateway/internal/gateway"
	"github.com/moat-ai/moat/services/gateway/internal/httpapi"
	"github.com/moat-ai/moat/services/gateway/internal/snapshot"
	"github.com/moat-ai/moat/services/gateway/internal/usage"
)

const (
	upstreamCredential = "sk-upstream-credential-for-tests"
	org                = "orgs/acme"
	project            = "orgs/acme/projects/web"
	otherProject       = "orgs/acme/projects/other"
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	url                            string // the gateway
	fast, slow, stalling           *providertest.Server
	projectKey, otherKey, adminKey string
	scopedKey                      string // a key of project that may call demo-model and slow-model only
	js                             jetstream.JetStream
	usage                          jetstream.Consumer
	logs                           *syncBuffer
	fastAddr                       string // host:port of fast
}

type options struct {
	header, idle time.Duration
	// strictEgress drops the allow list of loopback that lets the
	// gateway reach the mock providers, which listen there.
	strictEgress bool
}

func newKey(t *testing.T) string {
	t.Helper()
	k, err := authn.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// newFixture serves the data plane in front of mock providers, with a real
// key index and a snapshot built the way the config stream builds it, and
// publishes usage to an in-process NATS server.
func newFixture(t *testing.T, o options) *fixture {
	t.Helper()
	if o.header == 0 {
		o.header = 10 * time.Second
	}
	f := &fixture{projectKey: newKey(t), otherKey: newKey(t), adminKey: newKey(t), scopedKey: newKey(t), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	serveMock := func(cfg providertest.Config, wrap func(http.Handler) http.Handler) (*providertest.Server, string) {
		m := providertest.New(cfg)
		var h http.Handler = m
		if wrap != nil {
			h = wrap(h)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return m, srv.URL + "/v1"
	}
	var fastURL, slowURL, stallingURL, limitedURL, breakingURL string
	f.fast, fastURL = serveMock(providertest.Config{Credential: upstreamCredential, Chunks: 3}, nil)
	f.fastAddr = strings.TrimSuffix(strings.TrimPrefix(fastURL, "http://"), "/v1")
	_, fastPort, err := net.SplitHostPort(f.fastAddr)
	if err != nil {
		t.Fatal(err)
	}
	f.slow, slowURL = serveMock(providertest.Config{Credential: upstreamCredential, Delay: time.Hour}, nil)
	f.stalling, stallingURL = serveMock(providertest.Config{Credential: upstreamCredential, Chunks: 3, ChunkDelay: time.Hour}, nil)
	_, limitedURL = serveMock(providertest.Config{Credential: upstreamCredential}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set(providertest.HeaderError, "429")
			h.ServeHTTP(w, r)
		})
	})

	_, breakingURL = serveMock(providertest.Config{Credential: upstreamCredential, Chunks: 3}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set(providertest.HeaderStreamError, "1")
			h.ServeHTTP(w, r)
		})
	})

	// Keys.
	hasher, err := authn.NewHasher(random(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys := authn.NewIndex(hasher)
	keys.Replace(1, []*identityv1.KeyIndexEntry{
		{KeyId: "web-key", KeyHmac: hasher.Hash(f.projectKey), Role: identityv1.KeyIndexEntry_ROLE_PROJECT, Organization: org, Project: project, Prefix: authn.DisplayPrefix(f.projectKey)},
		{KeyId: "other-key", KeyHmac: hasher.Hash(f.otherKey), Role: identityv1.KeyIndexEntry_ROLE_PROJECT, Organization: org, Project: otherProject},
		{KeyId: "admin-key", KeyHmac: hasher.Hash(f.adminKey), Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN},
		{KeyId: "scoped-key", KeyHmac: hasher.Hash(f.scopedKey), Role: identityv1.KeyIndexEntry_ROLE_PROJECT, Organization: org, Project: project,
			AllowedModels: []string{"demo-model", "slow-model", "no-such-route"}},
	})

	// Configuration.
	keyring, err := secretbox.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(random(t, 32)))
	if err != nil {
		t.Fatal(err)
	}
	provider := func(id, baseURL, credential, aad string) *configv1.ConfigResource {
		name := org + "/providers/" + id
		if aad == "" {
			aad = name
		}
		s, err := keyring.Seal([]byte(credential), []byte(aad))
		if err != nil {
			t.Fatal(err)
		}
		return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: &configv1.GatewayProvider{
			Provider:   &configv1.Provider{Name: name, Type: configv1.Provider_TYPE_OPENAI_COMPATIBLE, BaseUrl: baseURL, HasCredential: true},
			Credential: &configv1.SealedSecret{KekId: s.KEKID, WrappedKey: s.WrappedKey, Ciphertext: s.Ciphertext},
		}}}
	}
	route := func(proj, id, model, providerID string) *configv1.ConfigResource {
		return &configv1.ConfigResource{Resource: &configv1.ConfigResource_Route{Route: &configv1.Route{
			Name: proj + "/routes/" + id, Model: model, Provider: org + "/providers/" + providerID, UpstreamModel: "upstream-" + model,
			CreateTime: timestamppb.New(time.Unix(1700000000, 0)),
		}}}
	}
	store := snapshot.NewStore(keyring, log)
	store.Replace(7, []*configv1.ConfigResource{
		{Resource: &configv1.ConfigResource_Organization{Organization: &configv1.Organization{Name: org}}},
		{Resource: &configv1.ConfigResource_Project{Project: &configv1.Project{Name: project}}},
		{Resource: &configv1.ConfigResource_Project{Project: &configv1.Project{Name: otherProject}}},
		provider("fast", fastURL, upstreamCredential, ""),
		provider("slow", slowURL, upstreamCredential, ""),
		provider("stalling", stallingURL, upstreamCredential, ""),
		provider("limited", limitedURL, upstreamCredential, ""),
		provider("breaking", breakingURL, upstreamCredential, ""),
		provider("down", "http://"+closedAddr(t)+"/v1", upstreamCredential, ""),
		provider("badcred", fastURL, "sk-not-the-right-one", ""),
		provider("sealed-elsewhere", fastURL, upstreamCredential, org+"/providers/another"),
		provider("by-name", "http://localhost:"+fastPort+"/v1", upstreamCredential, ""),
		route(project, "demo", "demo-model", "fast"),
		route(project, "slow", "slow-model", "slow"),
		route(project, "stalling", "stalling-model", "stalling"),
		route(project, "limited", "limited-model", "limited"),
		route(project, "down", "down-model", "down"),
		route(project, "breaking", "breaking-model", "breaking"),
		route(project, "badcred", "badcred-model", "badcred"),
		route(project, "broken", "broken-model", "sealed-elsewhere"),
		route(project, "by-name", "by-name-model", "by-name"),
		route(otherProject, "other", "other-model", "fast"),
	})

	// Usage events.
	ns := eventstest.NewServer(t)
	_, f.js = eventstest.Connect(t, ns)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, f.js, events.StreamConfig{Name: "GATEWAY", Subjects: []string{"gateway.>"}}); err != nil {
		t.Fatal(err)
	}
	pub, err := usage.New(f.js, usage.Options{Drain: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() {
		_ = pub.Run(pubCtx)
		close(pubDone)
	}()
	t.Cleanup(func() {
		stopPub()
		<-pubDone
	})
	f.usage, err = f.js.OrderedConsumer(ctx, "GATEWAY", jetstream.OrderedConsumerConfig{FilterSubjects: []string{usage.Subject}})
	if err != nil {
		t.Fatal(err)
	}

	var allow []netip.Prefix
	if !o.strictEgress {
		allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	transport := gateway.NewTransport(gateway.Timeouts{Dial: 2 * time.Second, Header: o.header}, allow)
	t.Cleanup(transport.CloseIdleConnections)
	mux := http.NewServeMux()
	httpapi.New(gateway.New(gateway.Options{Keys: keys, Routes: store, Usage: pub, Renderer: httpapi.Render{}, Transport: transport, IdleTimeout: o.idle, Log: log})).Mount(mux)
	gw := httptest.NewServer(mux)
	t.Cleanup(gw.Close)
	f.url = gw.URL

	// Whatever a test did, no secret reached a log line.
	t.Cleanup(func() {
		logs := f.logs.String()
		for _, secret := range []string{f.projectKey, f.otherKey, f.adminKey, f.scopedKey, upstreamCredential, "sk-not-the-right-one", "Bearer"} {
			if strings.Contains(logs, secret) {
				t.Errorf("a secret (%s...) reached the logs:\n%s", secret[:8], logs)
			}
		}
	})
	return f
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// post sends a chat request with key and returns the whole response.
func (f *fixture) post(t *testing.T, key, body string, header map[string]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func errorOf(t *testing.T, r response) openAIError {
	t.Helper()
	var e openAIError
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("body %s is not an OpenAI error (%v)", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	return e
}

// nextUsage returns the next usage event, checking that its ids agree.
func (f *fixture) nextUsage(t *testing.T) *gatewayv1.UsageRecorded {
	t.Helper()
	msg, err := f.usage.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no usage event within 10s: %v", err)
	}
	var u gatewayv1.UsageRecorded
	if err := proto.Unmarshal(msg.Data(), &u); err != nil {
		t.Fatalf("decode usage event: %v", err)
	}
	h := msg.Headers()
	if h.Get(jetstream.MsgIDHeader) != u.GetRequestId() || h.Get(events.HeaderID) != u.GetRequestId() ||
		h.Get(events.HeaderType) != "moat.gateway.v1.UsageRecorded" || h.Get(events.HeaderSubject) != u.GetProject() {
		t.Errorf("event headers %v do not match request %s", h, u.GetRequestId())
	}
	return &u
}

// wantUsage compares an event with want, ignoring the times, and checks
// that they are plausible.
func wantUsage(t *testing.T, got *gatewayv1.UsageRecorded, requestID string, want *gatewayv1.UsageRecorded) {
	t.Helper()
	want.RequestId = requestID
	want.Organization, want.Project, want.KeyId = org, project, "web-key"
	if diff := cmp.Diff(want, got, protocmp.Transform(),
		protocmp.IgnoreFields(&gatewayv1.UsageRecorded{}, "latency", "request_time")); diff != "" {
		t.Errorf("usage event mismatch (-want +got):\n%s", diff)
	}
	if got.GetLatency().AsDuration() <= 0 || time.Since(got.GetRequestTime().AsTime()) > time.Minute {
		t.Errorf("latency %v, request time %v: want positive and recent", got.GetLatency().AsDuration(), got.GetRequestTime().AsTime())
	}
	if id, err := uuid.Parse(requestID); err != nil || id.Version() != 7 {
		t.Errorf("request id %q is not a UUIDv7", requestID)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const chatBody = `{"model":"demo-model","messages":[{"role":"user","content":"count to three"}]}`

// Every gate refuses with its status and a stable code, sends nothing
// upstream, records nothing, and never echoes the key.
func TestRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	tests := []struct {
		name       string
		method     string
		key        string
		body       string
		wantStatus int
		wantType   string
		wantCode   string
	}{
		{"too large", "", f.projectKey, `{"model":"demo-model","messages":[],"x":"` + strings.Repeat("a", httpapi.MaxRequestBody) + `"}`,
			http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
		{"malformed JSON", "", f.projectKey, `{"model":"demo-model",`, http.StatusBadRequest, "invalid_request_error", "invalid_json"},
		{"missing model", "", f.projectKey, `{"messages":[]}`, http.StatusBadRequest, "invalid_request_error", "missing_model"},
		{"messages not an array", "", f.projectKey, `{"model":"demo-model","messages":"hi"}`, http.StatusBadRequest, "invalid_request_error", "invalid_type"},
		{"no key", "", "", chatBody, http.StatusUnauthorized, "authentication_error", "invalid_api_key"},
		{"unknown key", "", newKey(t), chatBody, http.StatusUnauthorized, "authentication_error", "invalid_api_key"},
		{"malformed key", "", "sk-something", chatBody, http.StatusUnauthorized, "authentication_error", "invalid_api_key"},
		{"platform admin key", "", f.adminKey, chatBody, http.StatusForbidden, "permission_error", "permission_denied"},
		{"unknown model", "", f.projectKey, `{"model":"gpt-5","messages":[]}`, http.StatusNotFound, "invalid_request_error", "model_not_found"},
		{"another project's model", "", f.projectKey, `{"model":"other-model","messages":[]}`, http.StatusNotFound, "invalid_request_error", "model_not_found"},
		{"wrong method", http.MethodGet, f.projectKey, "", http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed"},
		{"model the key may not call", "", f.scopedKey, `{"model":"limited-model","messages":[]}`, http.StatusForbidden, "invalid_request_error", "model_not_allowed"},
		{"unknown model, scoped key", "", f.scopedKey, `{"model":"no-such-route","messages":[]}`, http.StatusNotFound, "invalid_request_error", "model_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequestWithContext(t.Context(), method, f.url+"/v1/chat/completions", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.key != "" {
				req.Header.Set("Authorization", "Bearer "+tt.key)
			}
			r := do(t, req)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			e := errorOf(t, r)
			if e.Error.Type != tt.wantType || e.Error.Code != tt.wantCode {
				t.Errorf("error type, code = %q, %q; want %q, %q", e.Error.Type, e.Error.Code, tt.wantType, tt.wantCode)
			}
			if tt.key != "" && bytes.Contains(r.body, []byte(tt.key)) {
				t.Errorf("the error body echoes the key: %s", r.body)
			}
			if r.header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id on the refusal")
			}
		})
	}
	// The unknown model is echoed, but only so much of it.
	// A refused model names the param, as OpenAI's errors do.
	if e := errorOf(t, f.post(t, f.scopedKey, `{"model":"limited-model","messages":[]}`, nil)); e.Error.Param == nil || *e.Error.Param != "model" {
		t.Errorf("model_not_allowed param = %v, want model", e.Error.Param)
	}
	if r := f.post(t, f.projectKey, `{"model":"`+strings.Repeat("m", 100000)+`","messages":[]}`, nil); r.status != http.StatusBadRequest || len(r.body) > 1024 {
		t.Errorf("model over the limit = %d with a %d-byte body, want 400 with a short one", r.status, len(r.body))
	}
	if r := f.post(t, f.projectKey, `{"model":"`+strings.Repeat("m", 200)+`","messages":[]}`, nil); r.status != http.StatusNotFound || len(r.body) > 1024 {
		t.Errorf("unknown long model = %d with a %d-byte body, want 404 with a short one", r.status, len(r.body))
	}
	if n := f.fast.Requests(); n != 0 {
		t.Errorf("the provider got %d requests from refused calls, want 0", n)
	}
	// Refusals record nothing: the first usage event is the next served request's.
	r := f.post(t, f.projectKey, chatBody, nil)
	if got := f.nextUsage(t).GetRequestId(); got != r.header.Get("X-Request-Id") {
		t.Errorf("first usage event is for %s, want the served request %s", got, r.header.Get("X-Request-Id"))
	}
	// The scoped key calls the models it may.
	if r := f.post(t, f.scopedKey, chatBody, nil); r.status != http.StatusOK {
		t.Errorf("scoped key, allowed model = %d %s, want 200", r.status, r.body)
	}
}

func TestChatCompletion(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	r := f.post(t, f.projectKey, chatBody, map[string]string{"X-Private": "do-not-forward", "Cookie": "session=1"})
	if r.status != http.StatusOK {
		t.Fatalf("status = %d %s, want 200", r.status, r.body)
	}
	var got struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage map[string]int `json:"usage"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	// The mock counts prompt words and answers with as many words as chunks.
	if got.Model != "upstream-demo-model" || len(got.Choices) != 1 || got.Choices[0].Message.Content != "tok1 tok2 tok3" ||
		got.Usage["prompt_tokens"] != 3 || got.Usage["completion_tokens"] != 3 {
		t.Errorf("completion = %s, want the mock's answer with usage 3/3", r.body)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("Content-Length") != strconv.Itoa(len(r.body)) {
		t.Errorf("headers %v, want JSON with the body's length", r.header)
	}

	// What went upstream: the provider's credential, the upstream model,
	// and nothing of the client's.
	up, ok := f.fast.LastRequest()
	if !ok {
		t.Fatal("the provider got no request")
	}
	if got := up.Header.Get("Authorization"); got != "Bearer "+upstreamCredential {
		t.Errorf("upstream Authorization = %q, want the provider credential", got)
	}
	for name, values := range up.Header {
		for _, v := range values {
			if strings.Contains(v, f.projectKey) || name == "X-Private" || name == "Cookie" {
				t.Errorf("client header %s: %s reached the provider", name, v)
			}
		}
	}
	if bytes.Contains(up.Body, []byte(f.projectKey)) {
		t.Error("the client key reached the provider in the body")
	}
	var body map[string]any
	if err := json.Unmarshal(up.Body, &body); err != nil || body["model"] != "upstream-demo-model" || body["stream_options"] != nil {
		t.Errorf("upstream body = %s, want the model rewritten and nothing else added", up.Body)
	}
	if up.Header.Get("X-Request-Id") != r.header.Get("X-Request-Id") {
		t.Errorf("upstream X-Request-Id = %q, want the gateway's %q", up.Header.Get("X-Request-Id"), r.header.Get("X-Request-Id"))
	}

	wantUsage(t, f.nextUsage(t), r.header.Get("X-Request-Id"), &gatewayv1.UsageRecorded{
		Model: "demo-model", UpstreamModel: "upstream-demo-model", Provider: org + "/providers/fast",
		InputTokens: 3, OutputTokens: 3, HttpStatus: 200,
	})
}

// sse reads the data payloads of an SSE body.
func sse(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if p, ok := strings.CutPrefix(line, "data: "); ok {
			out = append(out, p)
		} else if line != "" {
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	return out
}

func TestStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		body        string
		wantUsageIn bool // the client gets the usage chunk
	}{
		{"gateway asks for usage", `{"model":"demo-model","stream":true,"messages":[{"role":"user","content":"one two"}]}`, false},
		{"client asks for usage", `{"model":"demo-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two"}]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, options{})
			r := f.post(t, f.projectKey, tt.body, nil)
			if r.status != http.StatusOK || r.header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
			}
			events := sse(t, r.body)
			// 3 content chunks, the finish chunk, the usage chunk if asked, [DONE].
			want := 5
			if tt.wantUsageIn {
				want = 6
			}
			if len(events) != want || events[len(events)-1] != "[DONE]" {
				t.Fatalf("got %d events %q, want %d ending with [DONE]", len(events), events, want)
			}
			if gotUsage := strings.Contains(events[len(events)-2], `"prompt_tokens"`); gotUsage != tt.wantUsageIn {
				t.Errorf("usage chunk relayed = %v, want %v", gotUsage, tt.wantUsageIn)
			}
			up, _ := f.fast.LastRequest()
			var body struct {
				Model         string
				StreamOptions map[string]any `json:"stream_options"`
			}
			if err := json.Unmarshal(up.Body, &body); err != nil || body.Model != "upstream-demo-model" || body.StreamOptions["include_usage"] != true {
				t.Errorf("upstream body = %s, want include_usage set", up.Body)
			}
			wantUsage(t, f.nextUsage(t), r.header.Get("X-Request-Id"), &gatewayv1.UsageRecorded{
				Model: "demo-model", UpstreamModel: "upstream-demo-model", Provider: org + "/providers/fast",
				InputTokens: 2, OutputTokens: 3, HttpStatus: 200, Stream: true,
			})
		})
	}
}

// A stream is relayed as it is produced: the first chunk reaches the client
// while the provider is still generating, and a client that hangs up
// cancels the provider call.
func TestStreamChunkByChunkAndDisconnect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"stalling-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.projectKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"tok1 "`) {
		t.Fatalf("first line = %q, %v; want the first chunk", line, err)
	}
	// The provider waits an hour before its second chunk: it has not finished.
	if n := f.stalling.Canceled(); n != 0 {
		t.Fatalf("provider calls ended = %d before the client hung up, want 0", n)
	}
	cancel()
	eventually(t, 5*time.Second, "the provider call is canceled", func() bool { return f.stalling.Canceled() == 1 })
	u := f.nextUsage(t)
	if u.GetModel() != "stalling-model" || !u.GetStream() || u.GetHttpStatus() != 200 {
		t.Errorf("usage = %v, want the interrupted stream recorded", u)
	}
}

// A provider that goes silent mid-stream is cut off after the idle
// timeout, and the stream ends with a terminal error in OpenAI's shape.
func TestStreamIdleTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{idle: 200 * time.Millisecond})
	r := f.post(t, f.projectKey, `{"model":"stalling-model","stream":true,"messages":[]}`, nil)
	events := sse(t, r.body)
	if r.status != http.StatusOK || len(events) != 2 {
		t.Fatalf("got %d %q, want 200 with the one chunk sent before the silence and an error", r.status, events)
	}
	var last openAIError
	if err := json.Unmarshal([]byte(events[1]), &last); err != nil || last.Error.Code != "upstream_timeout" || last.Error.Type != "api_error" {
		t.Errorf("last event = %s (%v), want an OpenAI error with code upstream_timeout", events[1], err)
	}
	eventually(t, 5*time.Second, "the silent provider call is canceled", func() bool { return f.stalling.Canceled() == 1 })
	if !strings.Contains(f.logs.String(), "provider stream went silent") {
		t.Errorf("logs do not say why the stream ended:\n%s", f.logs)
	}
	f.nextUsage(t)
	// The stream ended before the provider's usage chunk: the zero-token
	// ledger entry is not silent.
	if !strings.Contains(f.logs.String(), "the provider reported no usage; recording zero tokens") {
		t.Errorf("logs do not flag the missing usage:\n%s", f.logs)
	}
}

// A provider's own error event after the commit point reaches an OpenAI
// client as the stream's one terminal error, as the provider sent it: the
// gateway adds none of its own.
func TestStreamUpstreamErrorOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	r := f.post(t, f.projectKey, `{"model":"breaking-model","stream":true,"messages":[]}`, nil)
	events := sse(t, r.body)
	if r.status != http.StatusOK || len(events) != 2 {
		t.Fatalf("got %d %q, want 200 with the one chunk sent before the break and one error", r.status, events)
	}
	var last openAIError
	if err := json.Unmarshal([]byte(events[1]), &last); err != nil || last.Error.Type != "server_error" {
		t.Errorf("last event = %s (%v), want the provider's OpenAI error", events[1], err)
	}
	if u := f.nextUsage(t); u.GetModel() != "breaking-model" || !u.GetStream() {
		t.Errorf("usage = %v, want the broken stream recorded", u)
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{header: 300 * time.Millisecond})
	tests := []struct {
		model      string
		wantStatus int
		wantCode   string // "" when the provider's own error body is relayed
	}{
		{"down-model", http.StatusBadGateway, "upstream_unavailable"},
		{"slow-model", http.StatusGatewayTimeout, "upstream_timeout"},
		{"badcred-model", http.StatusBadGateway, "upstream_credential"},
		{"broken-model", http.StatusBadGateway, "upstream_unavailable"},
		{"limited-model", http.StatusTooManyRequests, "rate_limit_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			r := f.post(t, f.projectKey, `{"model":"`+tt.model+`","messages":[]}`, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			if e := errorOf(t, r); e.Error.Code != tt.wantCode {
				t.Errorf("error code = %q, want %q", e.Error.Code, tt.wantCode)
			}
			if bytes.Contains(r.body, []byte(upstreamCredential)) || bytes.Contains(r.body, []byte("127.0.0.1")) {
				t.Errorf("the error body leaks provider details: %s", r.body)
			}
			if tt.wantStatus == http.StatusTooManyRequests && r.header.Get("Retry-After") == "" {
				t.Error("Retry-After of the provider not relayed")
			}
			u := f.nextUsage(t)
			if u.GetModel() != tt.model || u.GetHttpStatus() != int32(tt.wantStatus) || u.GetInputTokens() != 0 {
				t.Errorf("usage = %v, want %s recorded with status %d and no tokens", u, tt.model, tt.wantStatus)
			}
		})
	}
	eventually(t, 5*time.Second, "the timed-out call is canceled at the provider", func() bool { return f.slow.Canceled() == 1 })
}

// Providers on internal addresses are refused at dial time unless the
// egress allow list covers them, whether the URL names the address or a
// host that resolves to it.
func TestEgressPolicy(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		strict     bool
		model      string
		wantStatus int
		wantCode   string
	}{
		{"loopback refused", true, "demo-model", http.StatusBadGateway, "upstream_blocked"},
		{"name resolving to loopback refused", true, "by-name-model", http.StatusBadGateway, "upstream_blocked"},
		{"loopback allowed", false, "demo-model", http.StatusOK, ""},
		{"name resolving to loopback allowed", false, "by-name-model", http.StatusOK, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, options{strictEgress: tt.strict})
			r := f.post(t, f.projectKey, `{"model":"`+tt.model+`","messages":[]}`, nil)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			u := f.nextUsage(t)
			if u.GetHttpStatus() != int32(tt.wantStatus) {
				t.Errorf("usage status = %d, want %d", u.GetHttpStatus(), tt.wantStatus)
			}
			if tt.wantCode == "" {
				return
			}
			e := errorOf(t, r)
			if e.Error.Code != tt.wantCode || e.Error.Type != "api_error" || !strings.Contains(e.Error.Message, "egress policy") {
				t.Errorf("error = %+v, want api_error %s about the egress policy", e.Error, tt.wantCode)
			}
			_, port, _ := net.SplitHostPort(f.fastAddr)
			for _, leak := range []string{"127.0.0.1", "::1", "localhost", port} {
				if bytes.Contains(r.body, []byte(leak)) {
					t.Errorf("the error body names the address (%s): %s", leak, r.body)
				}
			}
			if f.fast.Requests() != 0 {
				t.Errorf("the provider got %d requests, want none", f.fast.Requests())
			}
			logs := f.logs.String()
			if !strings.Contains(logs, `"msg":"provider address refused by the egress policy"`) ||
				!strings.Contains(logs, `"provider":"`+org+`/providers/`) {
				t.Errorf("logs do not record the refusal with the provider:\n%s", logs)
			}
			for line := range strings.SplitSeq(logs, "\n") {
				if strings.Contains(line, "egress policy") && (strings.Contains(line, port) || strings.Contains(line, "127.0.0.1")) {
					t.Errorf("the refusal's log line names the address: %s", line)
				}
			}
		})
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	f := newFixture(t, options{})
	get := func(key string) response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url+"/v1/models", nil)
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		return do(t, req)
	}
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	type list struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}
	for _, tt := range []struct {
		key    string
		models []string
	}{
		{f.projectKey, []string{"badcred-model", "breaking-model", "broken-model", "by-name-model", "demo-model", "down-model", "limited-model", "slow-model", "stalling-model"}},
		{f.otherKey, []string{"other-model"}},
		{f.scopedKey, []string{"demo-model", "slow-model"}},
	} {
		r := get(tt.key)
		var got list
		if err := json.Unmarshal(r.body, &got); r.status != http.StatusOK || err != nil {
			t.Fatalf("GET /v1/models = %d %s", r.status, r.body)
		}
		want := list{Object: "list"}
		for _, m := range tt.models {
			want.Data = append(want.Data, model{ID: m, Object: "model", Created: 1700000000, OwnedBy: "moat"})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("models mismatch (-want +got):\n%s", diff)
		}
	}
	for key, want := range map[string]int{"": http.StatusUnauthorized, f.adminKey: http.StatusForbidden} {
		if r := get(key); r.status != want {
			t.Errorf("GET /v1/models = %d, want %d", r.status, want)
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.url+"/v1/no-such-endpoint", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, req); r.status != http.StatusNotFound || errorOf(t, r).Error.Code != "unknown_url" {
		t.Errorf("GET /v1/no-such-endpoint = %d %s, want 404 unknown_url", r.status, r.body)
	}
}
