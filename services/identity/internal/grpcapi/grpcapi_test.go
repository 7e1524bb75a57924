package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	"github.com/moat-ai/moat/libs/events"
	"github.com/moat-ai/moat/libs/grpcclient"
	"github.com/moat-ai/moat/libs/pg"
	"github.com/moat-ai/moat/libs/pg/pgtest"
	"github.com/moat-ai/moat/libs/serve/servetest"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/grpcapi"
	"github.com/moat-ai/moat/services/identity/internal/identity"
	"github.com/moat-ai/moat/services/identity/internal/postgres"
)

const (
	internalToken = "internal-token-for-tests-0123456789"
	project       = "orgs/acme/projects/web"
)

// clock is real time plus an offset that tests move forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// memFile is an identity.KeyFile in memory.
type memFile struct {
	mu  sync.Mutex
	key string
}

func (f *memFile) Read() (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.key, f.key != "", nil
}

func (f *memFile) Create(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key != "" {
		return fmt.Errorf("file exists")
	}
	f.key = key
	return nil
}

// server is identity's gRPC API on a loopback port, wired as in app.Run:
// the target interceptor, then authentication against an index fed from
// the database.
type server struct {
	client  identityv1.IdentityServiceClient
	conn    *grpc.ClientConn
	pool    *pgxpool.Pool
	hasher  *authn.Hasher
	clock   *clock
	index   *authn.Index
	log     *servetest.SyncBuffer
	admin   string       // the bootstrap platform admin key
	adminID identity.Key // its record
}

func newServer(t *testing.T) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	hasher, err := authn.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	s := &server{pool: pool, hasher: hasher, clock: &clock{}, index: authn.NewIndex(hasher), log: &servetest.SyncBuffer{}}
	log := slog.New(slog.NewJSONHandler(s.log, nil))
	svc := identity.NewService(postgres.NewStore(pool, nil), hasher, s.clock.Now)

	file := &memFile{}
	call := identity.Call{Actor: "system", Action: "moat.identity.v1.IdentityService.CreateApiKey", RequestID: "bootstrap"}
	if s.adminID, _, err = svc.Bootstrap(ctx, call, file); err != nil {
		t.Fatal(err)
	}
	s.admin = file.key
	deleteOutbox(t, pool) // tests count their own audit events

	keys := pg.NewNotifier(pool, postgres.KeysChannel, log)
	api := grpcapi.New(svc, keys, log, ctx.Done())
	feeder := &grpcapi.IndexFeeder{Service: svc, Keys: keys, Index: s.index, Log: log}
	auth := &authn.Interceptor{Auth: s.index, Token: internalToken, Now: s.clock.Now,
		Internal: []string{identityv1.IdentityService_WatchKeyIndex_FullMethodName}, Denied: api.Denied}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(api.Unary(), auth.Unary()),
		grpc.ChainStreamInterceptor(auth.Stream()),
	)
	identityv1.RegisterIdentityServiceServer(gs, api)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = keys.Run(ctx) })
	wg.Go(func() { _ = feeder.Run(ctx) })
	wg.Go(func() { _ = gs.Serve(lis) })
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		wg.Wait()
	})

	s.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.conn.Close() })
	s.client = identityv1.NewIdentityServiceClient(s.conn)
	eventually(t, 5*time.Second, "the key index to load", func() bool {
		_, err := s.index.Authenticate(s.admin, time.Now())
		return err == nil
	})
	return s
}

// as returns a context that calls with key.
func as(t *testing.T, key string) context.Context {
	t.Helper()
	if key == "" {
		return t.Context()
	}
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+key)
}

// eventually polls cond until it holds, failing the test after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func deleteOutbox(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `DELETE FROM outbox`); err != nil {
		t.Fatal(err)
	}
}

// audits returns the audit events in the outbox, oldest first.
func audits(t *testing.T, pool *pgxpool.Pool) []*auditv1.AuditEvent {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT subject, headers->'ce-subject'->>0, payload FROM outbox ORDER BY created_at, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	var out []*auditv1.AuditEvent
	for rows.Next() {
		var subject, resource string
		var payload []byte
		if err := rows.Scan(&subject, &resource, &payload); err != nil {
			t.Fatal(err)
		}
		ev := &auditv1.AuditEvent{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			t.Fatal(err)
		}
		if subject != postgres.AuditSubject || resource != ev.GetTarget() {
			t.Errorf("outbox row on %s about %q, want %s about the target %q", subject, resource, postgres.AuditSubject, ev.GetTarget())
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *server) create(t *testing.T, req *identityv1.CreateApiKeyRequest) *identityv1.CreateApiKeyResponse {
	t.Helper()
	if req.Parent == "" {
		req.Parent = project
	}
	if req.ApiKey == nil {
		req.ApiKey = &identityv1.ApiKey{DisplayName: "ci"}
	}
	resp, err := s.client.CreateApiKey(as(t, s.admin), req)
	if err != nil {
		t.Fatalf("CreateApiKey(%v) = %v", req, err)
	}
	return resp
}

func TestCreateApiKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	expire := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	resp := s.create(t, &identityv1.CreateApiKeyRequest{
		ApiKey: &identityv1.ApiKey{
			DisplayName: "ci runner",
			ExpireTime:  timestamppb.New(expire),
			// Output-only fields are ignored.
			Name: "orgs/evil/projects/x/keys/y", Prefix: "moat_fake", RevokeTime: timestamppb.Now(),
		},
	})
	key := resp.GetKey()
	if !strings.HasPrefix(key, authn.KeyPrefix) || len(key) != 48 {
		t.Fatalf("key %s...: want moat_ and 48 characters", authn.DisplayPrefix(key))
	}
	got := resp.GetApiKey()
	id := strings.TrimPrefix(got.GetName(), project+"/keys/")
	if _, err := uuid.Parse(id); err != nil {
		t.Errorf("name %q is not %s/keys/{uuid}", got.GetName(), project)
	}
	want := &identityv1.ApiKey{Name: got.GetName(), DisplayName: "ci runner", Prefix: authn.DisplayPrefix(key),
		CreateTime: got.GetCreateTime(), ExpireTime: timestamppb.New(expire)}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("api key mismatch (-want +got):\n%s", diff)
	}

	// Stored: the HMAC and the prefix, nothing else of the key.
	var hmac []byte
	var prefix string
	if err := s.pool.QueryRow(t.Context(), `SELECT key_hmac, prefix FROM api_keys WHERE id = $1`, id).Scan(&hmac, &prefix); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hmac, s.hasher.Hash(key)) || prefix != authn.DisplayPrefix(key) {
		t.Errorf("stored hmac %x prefix %q, want the key's HMAC and prefix", hmac, prefix)
	}

	// Shown once: listing never returns it.
	list, err := s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: project})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*identityv1.ApiKey{got}, list.GetApiKeys(), protocmp.Transform()); diff != "" {
		t.Errorf("list mismatch (-want +got):\n%s", diff)
	}
	if strings.Contains(list.String(), key) {
		t.Error("ListApiKeys returned the key")
	}

	// The key works where the index is used, within a second.
	eventually(t, time.Second, "the new key in the index", func() bool {
		p, err := s.index.Authenticate(key, time.Now())
		return err == nil && p.Project == project && p.Organization == "orgs/acme"
	})
	assertNoSecret(t, s, key)
}

// assertNoSecret scans every table, the outbox payloads and the log for
// the key (RELIABILITY 17).
func assertNoSecret(t *testing.T, s *server, key string) {
	t.Helper()
	body := strings.TrimPrefix(key, authn.KeyPrefix)
	needles := []string{key, body, hex.EncodeToString([]byte(key)), hex.EncodeToString([]byte(body))}
	rows, err := s.pool.Query(t.Context(), `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 4 {
		t.Fatalf("found tables %v, want api_keys, outbox and more", tables)
	}
	for _, table := range tables {
		rows, err := s.pool.Query(t.Context(), fmt.Sprintf(`SELECT t::text FROM %s t`, pgx.Identifier{table}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range dump {
			for _, n := range needles {
				if strings.Contains(row, n) {
					t.Errorf("table %s holds the key: %.80s...", table, row)
				}
			}
		}
	}
	rows, err = s.pool.Query(t.Context(), `SELECT payload FROM outbox`)
	if err != nil {
		t.Fatal(err)
	}
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range payloads {
		if bytes.Contains(p, []byte(body)) {
			t.Error("an outbox payload holds the key")
		}
	}
	if s.log.Contains(body) {
		t.Error("the log holds the key")
	}
}

func TestCreateApiKeyRetry(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	rid := uuid.NewString()
	first := s.create(t, &identityv1.CreateApiKeyRequest{RequestId: rid})
	again := s.create(t, &identityv1.CreateApiKeyRequest{RequestId: rid})
	if again.GetKey() != "" {
		t.Error("a retried create showed the key again")
	}
	if diff := cmp.Diff(first.GetApiKey(), again.GetApiKey(), protocmp.Transform()); diff != "" {
		t.Errorf("retry returned another key (-want +got):\n%s", diff)
	}
	_, err := s.client.CreateApiKey(as(t, s.admin), &identityv1.CreateApiKeyRequest{Parent: "orgs/acme/projects/other", ApiKey: &identityv1.ApiKey{}, RequestId: rid})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("request id reused in another project: %v, want AlreadyExists", err)
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM api_keys WHERE role = 'project'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d project keys (%v), want 1", n, err)
	}
}

func TestCreateApiKeyInvalid(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	tests := []struct {
		name  string
		req   *identityv1.CreateApiKeyRequest
		field string
	}{
		{"no parent", &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{}}, "parent"},
		{"organization as parent", &identityv1.CreateApiKeyRequest{Parent: "orgs/acme", ApiKey: &identityv1.ApiKey{}}, "parent"},
		{"bad project id", &identityv1.CreateApiKeyRequest{Parent: "orgs/acme/projects/Web", ApiKey: &identityv1.ApiKey{}}, "parent"},
		{"no api key", &identityv1.CreateApiKeyRequest{Parent: project}, "api_key"},
		{"expired", &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{ExpireTime: timestamppb.New(time.Now().Add(-time.Minute))}}, "api_key.expire_time"},
		{"long display name", &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{DisplayName: strings.Repeat("x", 201)}}, "api_key.display_name"},
		{"request id not a UUID", &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}, RequestId: "again"}, "request_id"},
	}
	for _, tt := range tests {
		_, err := s.client.CreateApiKey(as(t, s.admin), tt.req)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.field+":") {
			t.Errorf("%s: CreateApiKey = %v, want InvalidArgument on %s", tt.name, err, tt.field)
		}
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM api_keys WHERE role = 'project'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d keys created (%v), want 0", n, err)
	}
}

func TestListApiKeys(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	var want []*identityv1.ApiKey
	for i := range 5 {
		k := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{DisplayName: fmt.Sprint(i)}}).GetApiKey()
		want = append([]*identityv1.ApiKey{k}, want...) // newest first
	}
	s.create(t, &identityv1.CreateApiKeyRequest{Parent: "orgs/acme/projects/api"})
	// One key has been used (as the usage consumer records it); the others
	// list without a last use.
	used := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)
	usedID := uuid.MustParse(path.Base(want[1].GetName()))
	if ok, err := postgres.NewStore(s.pool, nil).RecordKeyUse(context.Background(), usedID, used, time.Minute); !ok || err != nil {
		t.Fatalf("RecordKeyUse = %v, %v; want a write", ok, err)
	}
	want[1].LastUseTime = timestamppb.New(used)

	var got []*identityv1.ApiKey
	token, pages := "", 0
	for {
		resp, err := s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: project, PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, resp.GetApiKeys()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
		// A token is bound to its list.
		_, err = s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: "orgs/acme/projects/api", PageToken: token})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("page token of another project: %v, want InvalidArgument", err)
		}
	}
	if pages != 3 {
		t.Errorf("%d pages of 2 for 5 keys, want 3", pages)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("keys mismatch (-want +got):\n%s", diff)
	}
	all, err := s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: project})
	if err != nil || len(all.GetApiKeys()) != 5 || all.GetNextPageToken() != "" {
		t.Errorf("default page: %d keys, token %q, %v; want all 5", len(all.GetApiKeys()), all.GetNextPageToken(), err)
	}
	for name, req := range map[string]*identityv1.ListApiKeysRequest{
		"bad token":     {Parent: project, PageToken: "not-a-token"},
		"negative size": {Parent: project, PageSize: -1},
		"bad parent":    {Parent: "projects/web"},
	} {
		if _, err := s.client.ListApiKeys(as(t, s.admin), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if n := len(audits(t, s.pool)); n != 6 {
		t.Errorf("%d audit events, want 6 (the creates; lists are not audited)", n)
	}
}

func TestRevokeApiKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	resp := s.create(t, &identityv1.CreateApiKeyRequest{})
	name := resp.GetApiKey().GetName()
	eventually(t, time.Second, "the key in the index", func() bool {
		_, err := s.index.Authenticate(resp.GetKey(), time.Now())
		return err == nil
	})

	first, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetApiKey().GetRevokeTime() == nil {
		t.Fatal("revoked key has no revoke_time")
	}
	again, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: name})
	if err != nil {
		t.Fatalf("second revoke = %v, want the key unchanged", err)
	}
	if diff := cmp.Diff(first.GetApiKey(), again.GetApiKey(), protocmp.Transform()); diff != "" {
		t.Errorf("second revoke changed the key (-first +second):\n%s", diff)
	}
	eventually(t, time.Second, "the revoked key to leave the index", func() bool {
		_, err := s.index.Authenticate(resp.GetKey(), time.Now())
		return err != nil
	})

	id := strings.TrimPrefix(name, project+"/keys/")
	tests := []struct {
		name string
		key  string
		want codes.Code
	}{
		{"unknown key", project + "/keys/" + uuid.NewString(), codes.NotFound},
		{"another project's name for it", "orgs/acme/projects/api/keys/" + id, codes.NotFound},
		{"a project key as an admin key", "keys/" + id, codes.NotFound},
		{"the admin key under a project", project + "/keys/" + s.adminID.ID, codes.NotFound},
		{"malformed", "keys/nope", codes.InvalidArgument},
		{"uppercase id", project + "/keys/" + strings.ToUpper(id), codes.InvalidArgument},
	}
	for _, tt := range tests {
		if _, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: tt.key}); status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestRevokeOwnAdminKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	if _, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: "keys/" + s.adminID.ID}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, time.Second, "the revoked admin key to be refused", func() bool {
		_, err := s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: project})
		return status.Code(err) == codes.Unauthenticated
	})
	t.Logf("revoked admin key refused after %v", time.Since(start))
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	projectKey := s.create(t, &identityv1.CreateApiKeyRequest{}).GetKey()
	eventually(t, time.Second, "the project key in the index", func() bool {
		_, err := s.index.Authenticate(projectKey, time.Now())
		return err == nil
	})
	unknown, err := authn.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(ctx context.Context) error{
		"CreateApiKey": func(ctx context.Context) error {
			_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}})
			return err
		},
		"ListApiKeys": func(ctx context.Context) error {
			_, err := s.client.ListApiKeys(ctx, &identityv1.ListApiKeysRequest{Parent: project})
			return err
		},
		"RevokeApiKey": func(ctx context.Context) error {
			_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: project + "/keys/" + uuid.NewString()})
			return err
		},
		"WatchKeyIndex": func(ctx context.Context) error {
			stream, err := s.client.WatchKeyIndex(ctx, &identityv1.WatchKeyIndexRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			return err
		},
	}
	callers := []struct {
		name string
		key  string
		want codes.Code
	}{
		{"project key", projectKey, codes.PermissionDenied},
		{"no key", "", codes.Unauthenticated},
		{"unknown key", unknown, codes.Unauthenticated},
		{"malformed key", "moat_short", codes.Unauthenticated},
	}
	for _, c := range callers {
		for method, call := range calls {
			want := c.want
			if method == "WatchKeyIndex" {
				want = codes.Unauthenticated // keys never open the internal stream
			}
			err := call(as(t, c.key))
			if status.Code(err) != want {
				t.Errorf("%s with %s: %v, want %v", method, c.name, err, want)
			}
			if c.key != "" && strings.Contains(status.Convert(err).Message(), c.key) {
				t.Errorf("%s with %s: the error quotes the key", method, c.name)
			}
		}
	}
}

// TestAudit checks that every key mutation, allowed or refused, leaves
// exactly one audit event with the right fields (RELIABILITY 19).
func TestAudit(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	projectKey := s.create(t, &identityv1.CreateApiKeyRequest{})
	eventually(t, time.Second, "the project key in the index", func() bool {
		_, err := s.index.Authenticate(projectKey.GetKey(), time.Now())
		return err == nil
	})
	victim := s.create(t, &identityv1.CreateApiKeyRequest{}).GetApiKey().GetName()
	const (
		create = "moat.identity.v1.IdentityService.CreateApiKey"
		revoke = "moat.identity.v1.IdentityService.RevokeApiKey"
	)
	rid := uuid.NewString()
	admin := "keys/" + s.adminID.ID
	projectActor := "keys/" + strings.TrimPrefix(projectKey.GetApiKey().GetName(), project+"/keys/")
	missing := project + "/keys/" + uuid.NewString()

	tests := []struct {
		name    string
		key     string
		call    func(ctx context.Context) error
		want    *auditv1.AuditEvent
		wantRID string // "" means any non-empty request id (the trace id or none)
	}{
		{
			"create allowed", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}, RequestId: rid})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: create, Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK"},
			rid,
		},
		{
			"create retried", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}, RequestId: rid})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: create, Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK"},
			rid,
		},
		{
			"create without a key", "",
			func(ctx context.Context) error {
				_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: "anonymous", Action: create, Target: project, Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "UNAUTHENTICATED"},
			"-",
		},
		{
			"create with a project key", projectKey.GetKey(),
			func(ctx context.Context) error {
				_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: projectActor, Action: create, Target: project, Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "PERMISSION_DENIED"},
			"-",
		},
		{
			"create invalid", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{Parent: "orgs/acme/nope", ApiKey: &identityv1.ApiKey{}})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: create, Target: "orgs/acme/nope", Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "INVALID_ARGUMENT"},
			"-",
		},
		{
			"revoke allowed", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: victim})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: revoke, Target: victim, Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK"},
			"-",
		},
		{
			"revoke again", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: victim})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: revoke, Target: victim, Outcome: auditv1.AuditEvent_OUTCOME_ALLOWED, Status: "OK"},
			"-",
		},
		{
			"revoke without a key", "",
			func(ctx context.Context) error {
				_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: victim})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: "anonymous", Action: revoke, Target: victim, Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "UNAUTHENTICATED"},
			"-",
		},
		{
			"revoke with a project key", projectKey.GetKey(),
			func(ctx context.Context) error {
				_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: victim})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: projectActor, Action: revoke, Target: victim, Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "PERMISSION_DENIED"},
			"-",
		},
		{
			"revoke a missing key", s.admin,
			func(ctx context.Context) error {
				_, err := s.client.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{Name: missing})
				return err
			},
			&auditv1.AuditEvent{Organization: "orgs/acme", Actor: admin, Action: revoke, Target: missing, Outcome: auditv1.AuditEvent_OUTCOME_DENIED, Status: "NOT_FOUND"},
			"-",
		},
	}
	for _, tt := range tests {
		deleteOutbox(t, s.pool)
		ctx := metadata.AppendToOutgoingContext(as(t, tt.key), "x-request-id", "req-"+tt.name)
		_ = tt.call(ctx)
		got := audits(t, s.pool)
		if len(got) != 1 {
			t.Errorf("%s: %d audit events, want exactly 1: %v", tt.name, len(got), got)
			continue
		}
		ev := got[0]
		want := proto.Clone(tt.want).(*auditv1.AuditEvent)
		if want.Target == "" {
			want.Target = ev.GetTarget() // a created key's name
			if !strings.HasPrefix(ev.GetTarget(), project+"/keys/") {
				t.Errorf("%s: target %q, want the created key", tt.name, ev.GetTarget())
			}
		}
		want.RequestId = tt.wantRID
		if tt.wantRID == "-" {
			want.RequestId = "req-" + tt.name
		}
		if !strings.HasPrefix(ev.GetSourceAddress(), "127.0.0.1:") {
			t.Errorf("%s: source address %q, want the loopback peer", tt.name, ev.GetSourceAddress())
		}
		if d := time.Since(ev.GetEventTime().AsTime()); d < 0 || d > time.Minute {
			t.Errorf("%s: event time %v is not now", tt.name, ev.GetEventTime().AsTime())
		}
		want.SourceAddress, want.EventTime = ev.GetSourceAddress(), ev.GetEventTime()
		if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
			t.Errorf("%s: audit event mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	resp := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}})
	key := resp.GetKey()
	eventually(t, time.Second, "the key in the index", func() bool {
		_, err := s.index.Authenticate(key, s.clock.Now())
		return err == nil
	})
	// A working project key is refused for lack of rights; an expired one
	// is not recognised at all.
	list := func() error {
		_, err := s.client.ListApiKeys(as(t, key), &identityv1.ListApiKeysRequest{Parent: project})
		return err
	}
	if err := list(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("before expiry: %v, want PermissionDenied", err)
	}
	s.clock.Advance(2 * time.Hour)
	if err := list(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("after expiry: %v, want Unauthenticated", err)
	}
	// A fresh snapshot leaves the expired key out.
	stream := watch(t, s)
	snap := recv(t, stream).GetSnapshot()
	for _, e := range snap.GetEntries() {
		if bytes.Equal(e.GetKeyHmac(), s.hasher.Hash(key)) {
			t.Error("the snapshot holds an expired key")
		}
	}
}

func watch(t *testing.T, s *server) grpc.ServerStreamingClient[identityv1.WatchKeyIndexResponse] {
	t.Helper()
	conn, err := grpcclient.Dial(s.conn.Target(), nil, internalToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := identityv1.NewIdentityServiceClient(conn).WatchKeyIndex(t.Context(), &identityv1.WatchKeyIndexRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func recv(t *testing.T, stream grpc.ServerStreamingClient[identityv1.WatchKeyIndexResponse]) *identityv1.WatchKeyIndexResponse {
	t.Helper()
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv = %v", err)
	}
	return resp
}

func TestWatchKeyIndex(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	expire := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	before := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{ExpireTime: timestamppb.New(expire)}})
	revoked := s.create(t, &identityv1.CreateApiKeyRequest{})
	if _, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: revoked.GetApiKey().GetName()}); err != nil {
		t.Fatal(err)
	}

	stream := watch(t, s)
	first := recv(t, stream)
	id := func(name string) string { return name[strings.LastIndex(name, "/")+1:] }
	wantSnap := []*identityv1.KeyIndexEntry{
		{KeyId: s.adminID.ID, KeyHmac: s.hasher.Hash(s.admin), Role: identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN, Prefix: authn.DisplayPrefix(s.admin)},
		{KeyId: id(before.GetApiKey().GetName()), KeyHmac: s.hasher.Hash(before.GetKey()), Role: identityv1.KeyIndexEntry_ROLE_PROJECT,
			Organization: "orgs/acme", Project: project, ExpireTime: timestamppb.New(expire), Prefix: authn.DisplayPrefix(before.GetKey())},
	}
	byID := protocmp.SortRepeated(func(a, b *identityv1.KeyIndexEntry) bool { return a.GetKeyId() < b.GetKeyId() })
	if diff := cmp.Diff(wantSnap, first.GetSnapshot().GetEntries(), protocmp.Transform(), byID); diff != "" {
		t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
	}
	version := first.GetVersion()
	if version == 0 {
		t.Error("snapshot at version 0")
	}

	// A new key arrives as an upsert, a revocation as a removal, each
	// within a second and with a growing version.
	created := s.create(t, &identityv1.CreateApiKeyRequest{})
	start := time.Now()
	up := recv(t, stream)
	if d := time.Since(start); d > time.Second {
		t.Errorf("upsert took %v", d)
	}
	if up.GetUpsert().GetKeyId() != id(created.GetApiKey().GetName()) || up.GetVersion() <= version {
		t.Errorf("after a create: %v, want an upsert of the new key above version %d", up, version)
	}
	version = up.GetVersion()

	start = time.Now()
	if _, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: created.GetApiKey().GetName()}); err != nil {
		t.Fatal(err)
	}
	rm := recv(t, stream)
	if d := time.Since(start); d > time.Second {
		t.Errorf("removal arrived after %v, want within 1s", d)
	}
	if rm.GetRemoveKeyId() != id(created.GetApiKey().GetName()) || rm.GetVersion() <= version {
		t.Errorf("after a revoke: %v, want the removal of the key above version %d", rm, version)
	}

	// A follower built from the stream authenticates like identity does.
	ix := authn.NewIndex(s.hasher)
	ix.Replace(first.GetVersion(), first.GetSnapshot().GetEntries())
	ix.Upsert(up.GetVersion(), up.GetUpsert())
	ix.Remove(rm.GetVersion(), rm.GetRemoveKeyId())
	for key, works := range map[string]bool{s.admin: true, before.GetKey(): true, revoked.GetKey(): false, created.GetKey(): false} {
		if _, err := ix.Authenticate(key, time.Now()); (err == nil) != works {
			t.Errorf("key %s: authenticates %v, want %v", authn.DisplayPrefix(key), err == nil, works)
		}
	}
}

func TestWatchKeyIndexEndsAtShutdown(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDatabase(t, events.Migrations, postgres.Migrations)
	hasher, err := authn.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	svc := identity.NewService(postgres.NewStore(pool, nil), hasher, time.Now)
	done := make(chan struct{})
	api := grpcapi.New(svc, pg.NewNotifier(pool, postgres.KeysChannel, nil), slog.New(slog.DiscardHandler), done)
	gs := grpc.NewServer()
	identityv1.RegisterIdentityServiceServer(gs, api)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := identityv1.NewIdentityServiceClient(conn).WatchKeyIndex(t.Context(), &identityv1.WatchKeyIndexRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	close(done)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: %v, want Unavailable", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Error("GracefulStop waited for the stream")
	}
}

func TestAllowedModels(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	models := []string{"gpt-4o", "small model", "a/b:c"}
	resp := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{DisplayName: "scoped", AllowedModels: models}})
	if diff := cmp.Diff(models, resp.GetApiKey().GetAllowedModels()); diff != "" {
		t.Errorf("created key's allowed models (-want +got):\n%s", diff)
	}
	list, err := s.client.ListApiKeys(as(t, s.admin), &identityv1.ListApiKeysRequest{Parent: project})
	if err != nil || len(list.GetApiKeys()) != 1 {
		t.Fatalf("ListApiKeys = %v, %v", list, err)
	}
	if diff := cmp.Diff(models, list.GetApiKeys()[0].GetAllowedModels()); diff != "" {
		t.Errorf("listed key's allowed models (-want +got):\n%s", diff)
	}
	var p authn.Principal
	eventually(t, time.Second, "the key in the index", func() bool {
		p, err = s.index.Authenticate(resp.GetKey(), time.Now())
		return err == nil
	})
	if diff := cmp.Diff(models, p.AllowedModels); diff != "" {
		t.Errorf("principal's allowed models (-want +got):\n%s", diff)
	}
	var entry *identityv1.KeyIndexEntry
	for _, e := range recv(t, watch(t, s)).GetSnapshot().GetEntries() {
		if bytes.Equal(e.GetKeyHmac(), s.hasher.Hash(resp.GetKey())) {
			entry = e
		}
	}
	if diff := cmp.Diff(models, entry.GetAllowedModels()); diff != "" {
		t.Errorf("index entry's allowed models (-want +got):\n%s", diff)
	}
}

func TestAllowedModelsInvalid(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("m%d", i)
	}
	tests := []struct {
		name   string
		models []string
		field  string
	}{
		{"too many", many, "api_key.allowed_models"},
		{"empty name", []string{"a", ""}, "api_key.allowed_models[1]"},
		{"too long", []string{strings.Repeat("m", 129)}, "api_key.allowed_models[0]"},
		{"not ASCII", []string{"modèle"}, "api_key.allowed_models[0]"},
		{"control character", []string{"a\nb"}, "api_key.allowed_models[0]"},
		{"duplicate", []string{"a", "b", "a"}, "api_key.allowed_models[2]"},
	}
	for _, tt := range tests {
		_, err := s.client.CreateApiKey(as(t, s.admin), &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{AllowedModels: tt.models}})
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tt.field+":") {
			t.Errorf("%s: CreateApiKey = %v, want InvalidArgument on %s", tt.name, err, tt.field)
		}
	}
	// The limits themselves are fine.
	s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{AllowedModels: append(many[:100:100], strings.Repeat("m", 128))[1:]}})
}

// works reports whether key authenticates against s's index at s's clock.
func (s *server) works(key string) bool {
	_, err := s.index.Authenticate(key, s.clock.Now())
	return err == nil
}

func TestRotateApiKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	models := []string{"gpt-4o", "small"}
	old := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{DisplayName: "ci", AllowedModels: models}})
	deleteOutbox(t, s.pool)

	requestID := uuid.NewString()
	req := &identityv1.RotateApiKeyRequest{Name: old.GetApiKey().GetName(), GracePeriod: durationpb.New(time.Hour), RequestId: requestID}
	before := s.clock.Now()
	resp, err := s.client.RotateApiKey(as(t, s.admin), req)
	if err != nil {
		t.Fatalf("RotateApiKey = %v", err)
	}
	after := s.clock.Now()
	n := resp.GetNewApiKey()
	if !strings.HasPrefix(n.GetName(), project+"/keys/") || n.GetName() == old.GetApiKey().GetName() ||
		n.GetDisplayName() != "ci" || n.GetExpireTime() != nil || !strings.HasPrefix(resp.GetKey(), n.GetPrefix()) {
		t.Errorf("new key = %v (key has prefix %v)", n, strings.HasPrefix(resp.GetKey(), n.GetPrefix()))
	}
	if diff := cmp.Diff(models, n.GetAllowedModels()); diff != "" {
		t.Errorf("new key's allowed models (-want +got):\n%s", diff)
	}
	o := resp.GetOldApiKey()
	if exp := o.GetExpireTime().AsTime(); o.GetName() != old.GetApiKey().GetName() ||
		exp.Before(before.Add(time.Hour).Add(-time.Millisecond)) || exp.After(after.Add(time.Hour)) {
		t.Errorf("old key = %v, want it to expire an hour after the rotation", o)
	}

	// Both keys work during the grace period, the new one after it.
	eventually(t, time.Second, "both keys in the index", func() bool { return s.works(old.GetKey()) && s.works(resp.GetKey()) })
	p, err := s.index.Authenticate(resp.GetKey(), s.clock.Now())
	if err != nil || p.Project != project {
		t.Fatalf("new key: %+v, %v", p, err)
	}
	if diff := cmp.Diff(models, p.AllowedModels); diff != "" {
		t.Errorf("new key's principal allowed models (-want +got):\n%s", diff)
	}

	// A retry returns the same rotation, without the key.
	again, err := s.client.RotateApiKey(as(t, s.admin), req)
	if err != nil {
		t.Fatalf("retried RotateApiKey = %v", err)
	}
	if again.GetKey() != "" || again.GetNewApiKey().GetName() != n.GetName() ||
		!again.GetOldApiKey().GetExpireTime().AsTime().Equal(o.GetExpireTime().AsTime()) {
		t.Errorf("retry = %v, want the first rotation without the key", again)
	}
	// The request id belongs to that rotation only.
	other := s.create(t, &identityv1.CreateApiKeyRequest{})
	if _, err := s.client.RotateApiKey(as(t, s.admin), &identityv1.RotateApiKeyRequest{Name: other.GetApiKey().GetName(), RequestId: requestID}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("request id reused on another key: %v, want AlreadyExists", err)
	}
	if _, err := s.client.CreateApiKey(as(t, s.admin), &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{}, RequestId: requestID}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("request id reused by a create: %v, want AlreadyExists", err)
	}

	s.clock.Advance(2 * time.Hour)
	if s.works(old.GetKey()) || !s.works(resp.GetKey()) {
		t.Errorf("after the grace period: old key works %v, new key works %v; want false, true", s.works(old.GetKey()), s.works(resp.GetKey()))
	}

	// Every rotation is audited, with the old key as target.
	var got []string
	for _, ev := range audits(t, s.pool) {
		if ev.GetAction() == "moat.identity.v1.IdentityService.RotateApiKey" {
			got = append(got, ev.GetTarget()+" "+ev.GetOutcome().String()+" "+ev.GetStatus()+" "+ev.GetRequestId())
		}
	}
	want := []string{
		o.GetName() + " OUTCOME_ALLOWED OK " + requestID,
		o.GetName() + " OUTCOME_ALLOWED OK " + requestID,
		other.GetApiKey().GetName() + " OUTCOME_DENIED ALREADY_EXISTS " + requestID,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rotation audit events (-want +got):\n%s", diff)
	}
	assertNoSecret(t, s, resp.GetKey())
}

func TestRotateApiKeyGrace(t *testing.T) {
	t.Parallel()
	s := newServer(t)

	// Zero grace: the old key stops at once.
	k := s.create(t, &identityv1.CreateApiKeyRequest{})
	eventually(t, time.Second, "the key in the index", func() bool { return s.works(k.GetKey()) })
	resp, err := s.client.RotateApiKey(as(t, s.admin), &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), GracePeriod: durationpb.New(0)})
	if err != nil {
		t.Fatalf("RotateApiKey = %v", err)
	}
	eventually(t, time.Second, "the old key out of the index, the new one in", func() bool { return !s.works(k.GetKey()) && s.works(resp.GetKey()) })
	// Rotating it again finds it expired.
	if _, err := s.client.RotateApiKey(as(t, s.admin), &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("rotating an expired key: %v, want FailedPrecondition", err)
	}

	// An earlier expiry is kept; the default grace is a day.
	expire := s.clock.Now().Add(30 * time.Minute).Truncate(time.Microsecond)
	soon := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{ExpireTime: timestamppb.New(expire)}})
	r, err := s.client.RotateApiKey(as(t, s.admin), &identityv1.RotateApiKeyRequest{Name: soon.GetApiKey().GetName()})
	if err != nil || !r.GetOldApiKey().GetExpireTime().AsTime().Equal(expire) {
		t.Errorf("rotating a key expiring sooner than the grace = %v, %v; want its expiry kept at %v", r.GetOldApiKey(), err, expire)
	}
	later := s.create(t, &identityv1.CreateApiKeyRequest{})
	before := s.clock.Now()
	r, err = s.client.RotateApiKey(as(t, s.admin), &identityv1.RotateApiKeyRequest{Name: later.GetApiKey().GetName()})
	if exp := r.GetOldApiKey().GetExpireTime().AsTime(); err != nil || exp.Before(before.Add(24*time.Hour).Add(-time.Millisecond)) || exp.After(s.clock.Now().Add(24*time.Hour)) {
		t.Errorf("default grace: old key %v, %v; want it to expire a day from now", r.GetOldApiKey(), err)
	}
}

func TestRotateApiKeyRefused(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	k := s.create(t, &identityv1.CreateApiKeyRequest{})
	revoked := s.create(t, &identityv1.CreateApiKeyRequest{})
	if _, err := s.client.RevokeApiKey(as(t, s.admin), &identityv1.RevokeApiKeyRequest{Name: revoked.GetApiKey().GetName()}); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(k.GetApiKey().GetName(), project+"/keys/")
	deleteOutbox(t, s.pool)
	tests := []struct {
		name string
		key  string
		req  *identityv1.RotateApiKeyRequest
		want codes.Code
	}{
		{"revoked", s.admin, &identityv1.RotateApiKeyRequest{Name: revoked.GetApiKey().GetName()}, codes.FailedPrecondition},
		{"negative grace", s.admin, &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), GracePeriod: durationpb.New(-time.Second)}, codes.InvalidArgument},
		{"grace over 30 days", s.admin, &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), GracePeriod: durationpb.New(30*24*time.Hour + time.Second)}, codes.InvalidArgument},
		{"request id not a UUID", s.admin, &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), RequestId: "again"}, codes.InvalidArgument},
		{"malformed name", s.admin, &identityv1.RotateApiKeyRequest{Name: "keys"}, codes.InvalidArgument},
		{"platform admin key", s.admin, &identityv1.RotateApiKeyRequest{Name: "keys/" + s.adminID.ID}, codes.InvalidArgument},
		{"another project", s.admin, &identityv1.RotateApiKeyRequest{Name: "orgs/acme/projects/other/keys/" + id}, codes.NotFound},
		{"missing key", s.admin, &identityv1.RotateApiKeyRequest{Name: project + "/keys/" + uuid.NewString()}, codes.NotFound},
		{"project key", k.GetKey(), &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName()}, codes.PermissionDenied},
		{"no key", "", &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName()}, codes.Unauthenticated},
	}
	for _, tt := range tests {
		if _, err := s.client.RotateApiKey(as(t, tt.key), tt.req); status.Code(err) != tt.want {
			t.Errorf("%s: RotateApiKey = %v, want %v", tt.name, err, tt.want)
		}
	}
	// Each refusal is audited as denied, and nothing was created.
	evs := audits(t, s.pool)
	if len(evs) != len(tests) {
		t.Errorf("%d audit events, want %d", len(evs), len(tests))
	}
	for _, ev := range evs {
		if ev.GetAction() != "moat.identity.v1.IdentityService.RotateApiKey" || ev.GetOutcome() != auditv1.AuditEvent_OUTCOME_DENIED {
			t.Errorf("audit event %v, want a denied RotateApiKey", ev)
		}
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM api_keys WHERE role = 'project'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d project keys (%v), want 2", n, err)
	}
}
