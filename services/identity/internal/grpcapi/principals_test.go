package grpcapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// addMember makes user a member of orgs/acme.
func (s *server) addMember(t *testing.T, user string) {
	t.Helper()
	if _, err := s.client.CreateMember(as(t, s.admin), &identityv1.CreateMemberRequest{Parent: "orgs/acme", MemberId: user,
		Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_MEMBER}}); err != nil {
		t.Fatalf("add %s: %v", user, err)
	}
}

func (s *server) newServiceAccount(t *testing.T, parent, id string) *identityv1.ServiceAccount {
	t.Helper()
	resp, err := s.client.CreateServiceAccount(as(t, s.admin), &identityv1.CreateServiceAccountRequest{Parent: parent,
		ServiceAccountId: id, ServiceAccount: &identityv1.ServiceAccount{DisplayName: "SA " + id}})
	if err != nil {
		t.Fatalf("create service account %s: %v", id, err)
	}
	return resp.GetServiceAccount()
}

func (s *server) newAgent(t *testing.T, parent, id, owner string) *identityv1.Agent {
	t.Helper()
	resp, err := s.client.CreateAgent(as(t, s.admin), &identityv1.CreateAgentRequest{Parent: parent, AgentId: id,
		Agent: &identityv1.Agent{DisplayName: "Agent " + id, Owner: owner, RiskTier: identityv1.RiskTier_RISK_TIER_LOW}})
	if err != nil {
		t.Fatalf("create agent %s: %v", id, err)
	}
	return resp.GetAgent()
}

// wantInvalid fails unless err is INVALID_ARGUMENT about field.
func wantInvalid(t *testing.T, what string, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field+":") {
		t.Errorf("%s: %v, want INVALID_ARGUMENT on %s", what, err, field)
	}
}

func TestServiceAccounts(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	admin := as(t, s.admin)

	before := s.clock.Now().Truncate(time.Microsecond)
	created, err := s.client.CreateServiceAccount(admin, &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "ci-runner",
		ServiceAccount: &identityv1.ServiceAccount{DisplayName: "CI runner", Description: "builds main",
			// Output-only fields and the name are the server's.
			Name: "orgs/evil/projects/x/serviceAccounts/y", CreateTime: timestamppb.New(time.Unix(0, 0))}})
	if err != nil {
		t.Fatal(err)
	}
	sa := created.GetServiceAccount()
	want := &identityv1.ServiceAccount{Name: project + "/serviceAccounts/ci-runner", DisplayName: "CI runner", Description: "builds main",
		CreateTime: sa.GetCreateTime(), UpdateTime: sa.GetCreateTime()}
	if diff := cmp.Diff(want, sa, protocmp.Transform()); diff != "" {
		t.Errorf("created service account mismatch (-want +got):\n%s", diff)
	}
	if sa.GetCreateTime().AsTime().Before(before) {
		t.Errorf("create_time %v is before the call", sa.GetCreateTime().AsTime())
	}
	got, err := s.client.GetServiceAccount(admin, &identityv1.GetServiceAccountRequest{Name: sa.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sa, got.GetServiceAccount(), protocmp.Transform()); diff != "" {
		t.Errorf("GetServiceAccount mismatch (-want +got):\n%s", diff)
	}

	// Ids are unique per project, not per organization.
	if _, err := s.client.CreateServiceAccount(admin, &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "ci-runner",
		ServiceAccount: &identityv1.ServiceAccount{}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateServiceAccount(same id) = %v, want ALREADY_EXISTS", err)
	}
	s.newServiceAccount(t, "orgs/acme/projects/api", "ci-runner")
	for name, code := range map[string]codes.Code{
		project + "/serviceAccounts/missing":      codes.NotFound,
		project + "/agents/ci-runner":             codes.InvalidArgument,
		"orgs/acme/serviceAccounts/ci-runner":     codes.InvalidArgument,
		project + "/serviceAccounts/Not-An-Id":    codes.InvalidArgument,
		"orgs/other/projects/web/serviceAccounts": codes.InvalidArgument,
	} {
		if _, err := s.client.GetServiceAccount(admin, &identityv1.GetServiceAccountRequest{Name: name}); status.Code(err) != code {
			t.Errorf("GetServiceAccount(%s) = %v, want %v", name, err, code)
		}
	}

	invalid := []struct {
		name  string
		req   *identityv1.CreateServiceAccountRequest
		field string
	}{
		{"no service account", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "abc"}, "service_account"},
		{"organization as parent", &identityv1.CreateServiceAccountRequest{Parent: "orgs/acme", ServiceAccountId: "abc", ServiceAccount: &identityv1.ServiceAccount{}}, "parent"},
		{"no id", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccount: &identityv1.ServiceAccount{}}, "service_account_id"},
		{"short id", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "ab", ServiceAccount: &identityv1.ServiceAccount{}}, "service_account_id"},
		{"id with a digit first", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "1abc", ServiceAccount: &identityv1.ServiceAccount{}}, "service_account_id"},
		{"id too long", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "a" + strings.Repeat("b", 63), ServiceAccount: &identityv1.ServiceAccount{}}, "service_account_id"},
		{"long display name", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "abc",
			ServiceAccount: &identityv1.ServiceAccount{DisplayName: strings.Repeat("x", 201)}}, "service_account.display_name"},
		{"long description", &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "abc",
			ServiceAccount: &identityv1.ServiceAccount{Description: strings.Repeat("x", 1001)}}, "service_account.description"},
	}
	for _, tt := range invalid {
		_, err := s.client.CreateServiceAccount(admin, tt.req)
		wantInvalid(t, tt.name, err, tt.field)
	}

	// An update changes the masked fields only, and update_time.
	s.clock.Advance(time.Minute)
	upd, err := s.client.UpdateServiceAccount(admin, &identityv1.UpdateServiceAccountRequest{
		ServiceAccount: &identityv1.ServiceAccount{Name: sa.GetName(), DisplayName: "Renamed", Description: "not applied"},
		UpdateMask:     &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
	if err != nil {
		t.Fatal(err)
	}
	u := upd.GetServiceAccount()
	if u.GetDisplayName() != "Renamed" || u.GetDescription() != "builds main" || !u.GetCreateTime().AsTime().Equal(sa.GetCreateTime().AsTime()) ||
		!u.GetUpdateTime().AsTime().After(sa.GetUpdateTime().AsTime()) {
		t.Errorf("updated service account = %v", u)
	}
	// Output-only fields, the name and unknown fields are not in the mask.
	for _, paths := range [][]string{{}, {"name"}, {"create_time"}, {"update_time"}, {"display_name", "update_time"}, {"owner"}} {
		_, err := s.client.UpdateServiceAccount(admin, &identityv1.UpdateServiceAccountRequest{
			ServiceAccount: &identityv1.ServiceAccount{Name: sa.GetName(), DisplayName: "Forged", CreateTime: timestamppb.New(time.Unix(0, 0))},
			UpdateMask:     &fieldmaskpb.FieldMask{Paths: paths}})
		wantInvalid(t, fmt.Sprintf("UpdateServiceAccount(mask %q)", paths), err, "update_mask")
	}
	for name, req := range map[string]*identityv1.UpdateServiceAccountRequest{
		"missing":           {ServiceAccount: &identityv1.ServiceAccount{Name: project + "/serviceAccounts/missing"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}}},
		"long display name": {ServiceAccount: &identityv1.ServiceAccount{Name: sa.GetName(), DisplayName: strings.Repeat("x", 201)}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}},
	} {
		_, err := s.client.UpdateServiceAccount(admin, req)
		if want := map[string]codes.Code{"missing": codes.NotFound, "long display name": codes.InvalidArgument}[name]; status.Code(err) != want {
			t.Errorf("UpdateServiceAccount(%s) = %v, want %v", name, err, want)
		}
	}
	if got, err := s.client.GetServiceAccount(admin, &identityv1.GetServiceAccountRequest{Name: sa.GetName()}); err != nil ||
		!proto.Equal(got.GetServiceAccount(), u) {
		t.Errorf("after refused updates: %v, %v; want %v", got, err, u)
	}

	// Deleting frees the id; a deleted service account is not found.
	del, err := s.client.DeleteServiceAccount(admin, &identityv1.DeleteServiceAccountRequest{Name: sa.GetName()})
	if err != nil || del.GetRevokedKeys() != 0 {
		t.Fatalf("DeleteServiceAccount = %v, %v; want no keys revoked", del, err)
	}
	if _, err := s.client.GetServiceAccount(admin, &identityv1.GetServiceAccountRequest{Name: sa.GetName()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetServiceAccount(deleted) = %v, want NOT_FOUND", err)
	}
	if _, err := s.client.DeleteServiceAccount(admin, &identityv1.DeleteServiceAccountRequest{Name: sa.GetName()}); status.Code(err) != codes.NotFound {
		t.Errorf("DeleteServiceAccount(deleted) = %v, want NOT_FOUND", err)
	}
	if again := s.newServiceAccount(t, project, "ci-runner"); again.GetDescription() != "" {
		t.Errorf("a reused id inherited %v", again)
	}
}

func TestListPrincipals(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.addMember(t, "ann")
	var wantSAs, wantAgents []string
	// Created out of id order: lists are in id order.
	for _, id := range []string{"echo", "alpha", "delta", "bravo", "charlie"} {
		wantSAs = append(wantSAs, s.newServiceAccount(t, project, id).GetName())
		wantAgents = append(wantAgents, s.newAgent(t, project, id, "users/ann").GetName())
	}
	s.newServiceAccount(t, "orgs/acme/projects/api", "other")
	s.newAgent(t, "orgs/acme/projects/api", "other", "users/ann")
	type page struct {
		names []string
		next  string
	}
	lists := map[string]struct {
		want []string
		list func(size int32, token, parent string) (page, error)
	}{
		"service accounts": {wantSAs, func(size int32, token, parent string) (page, error) {
			resp, err := s.client.ListServiceAccounts(as(t, s.admin), &identityv1.ListServiceAccountsRequest{Parent: parent, PageSize: size, PageToken: token})
			var p page
			for _, a := range resp.GetServiceAccounts() {
				p.names = append(p.names, a.GetName())
			}
			p.next = resp.GetNextPageToken()
			return p, err
		}},
		"agents": {wantAgents, func(size int32, token, parent string) (page, error) {
			resp, err := s.client.ListAgents(as(t, s.admin), &identityv1.ListAgentsRequest{Parent: parent, PageSize: size, PageToken: token})
			var p page
			for _, a := range resp.GetAgents() {
				p.names = append(p.names, a.GetName())
			}
			p.next = resp.GetNextPageToken()
			return p, err
		}},
	}
	for what, l := range lists {
		var got []string
		token, pages := "", 0
		for {
			p, err := l.list(2, token, project)
			if err != nil {
				t.Fatalf("list %s: %v", what, err)
			}
			pages++
			got = append(got, p.names...)
			if token = p.next; token == "" {
				break
			}
			// A token is bound to its list.
			if _, err := l.list(2, token, "orgs/acme/projects/api"); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: another project's page token = %v, want INVALID_ARGUMENT", what, err)
			}
		}
		if pages != 3 {
			t.Errorf("%s: %d pages of 2 for 5, want 3", what, pages)
		}
		if diff := cmp.Diff(slices.Sorted(slices.Values(l.want)), got); diff != "" {
			t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
		}
		if p, err := l.list(0, "", project); err != nil || len(p.names) != 5 || p.next != "" {
			t.Errorf("%s: default page = %v, %v; want all 5", what, p, err)
		}
		for name, args := range map[string]struct {
			size          int32
			token, parent string
		}{
			"bad token":     {0, "not-a-token", project},
			"negative size": {-1, "", project},
			"bad parent":    {0, "", "orgs/acme"},
		} {
			if _, err := l.list(args.size, args.token, args.parent); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %s = %v, want INVALID_ARGUMENT", what, name, err)
			}
		}
	}
}

func TestAgents(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	admin := as(t, s.admin)
	s.addMember(t, "ann")
	s.addMember(t, "bob")

	created, err := s.client.CreateAgent(admin, &identityv1.CreateAgentRequest{Parent: project, AgentId: "triage-bot",
		Agent: &identityv1.Agent{DisplayName: "Triage", Description: "labels issues", Owner: "users/ann",
			RiskTier: identityv1.RiskTier_RISK_TIER_MEDIUM, ActsFor: "users/bob", UpdateTime: timestamppb.New(time.Unix(0, 0))}})
	if err != nil {
		t.Fatal(err)
	}
	ag := created.GetAgent()
	want := &identityv1.Agent{Name: project + "/agents/triage-bot", DisplayName: "Triage", Description: "labels issues", Owner: "users/ann",
		RiskTier: identityv1.RiskTier_RISK_TIER_MEDIUM, ActsFor: "users/bob", CreateTime: ag.GetCreateTime(), UpdateTime: ag.GetCreateTime()}
	if diff := cmp.Diff(want, ag, protocmp.Transform()); diff != "" {
		t.Errorf("created agent mismatch (-want +got):\n%s", diff)
	}
	got, err := s.client.GetAgent(admin, &identityv1.GetAgentRequest{Name: ag.GetName()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ag, got.GetAgent(), protocmp.Transform()); diff != "" {
		t.Errorf("GetAgent mismatch (-want +got):\n%s", diff)
	}
	if _, err := s.client.GetAgent(admin, &identityv1.GetAgentRequest{Name: project + "/agents/missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAgent(missing) = %v, want NOT_FOUND", err)
	}
	if _, err := s.client.CreateAgent(admin, &identityv1.CreateAgentRequest{Parent: project, AgentId: "triage-bot",
		Agent: &identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateAgent(same id) = %v, want ALREADY_EXISTS", err)
	}

	agent := func(a *identityv1.Agent) *identityv1.CreateAgentRequest {
		return &identityv1.CreateAgentRequest{Parent: project, AgentId: "new-bot", Agent: a}
	}
	refused := []struct {
		name  string
		req   *identityv1.CreateAgentRequest
		code  codes.Code
		field string
	}{
		{"no agent", &identityv1.CreateAgentRequest{Parent: project, AgentId: "new-bot"}, codes.InvalidArgument, "agent"},
		{"bad id", &identityv1.CreateAgentRequest{Parent: project, AgentId: "New_Bot", Agent: &identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}}, codes.InvalidArgument, "agent_id"},
		{"bad parent", &identityv1.CreateAgentRequest{Parent: "orgs/acme", AgentId: "new-bot", Agent: &identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}}, codes.InvalidArgument, "parent"},
		{"no owner", agent(&identityv1.Agent{RiskTier: identityv1.RiskTier_RISK_TIER_LOW}), codes.InvalidArgument, "agent.owner"},
		{"owner not a user", agent(&identityv1.Agent{Owner: project + "/serviceAccounts/ci", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}), codes.InvalidArgument, "agent.owner"},
		{"no risk tier", agent(&identityv1.Agent{Owner: "users/ann"}), codes.InvalidArgument, "agent.risk_tier"},
		{"unknown risk tier", agent(&identityv1.Agent{Owner: "users/ann", RiskTier: 42}), codes.InvalidArgument, "agent.risk_tier"},
		{"acts_for not a user", agent(&identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW, ActsFor: "bob"}), codes.InvalidArgument, "agent.acts_for"},
		{"long description", agent(&identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW, Description: strings.Repeat("é", 1001)}), codes.InvalidArgument, "agent.description"},
		{"owner not a member", agent(&identityv1.Agent{Owner: "users/stranger", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}), codes.FailedPrecondition, ""},
		{"acts_for not a member", agent(&identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_LOW, ActsFor: "users/stranger"}), codes.FailedPrecondition, ""},
	}
	for _, tt := range refused {
		_, err := s.client.CreateAgent(admin, tt.req)
		if tt.field != "" {
			wantInvalid(t, tt.name, err, tt.field)
		} else if status.Code(err) != tt.code {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.code)
		}
	}

	// The owner and the member the agent acts for stay members while it
	// names them.
	for _, user := range []string{"ann", "bob"} {
		_, err := s.client.DeleteMember(admin, &identityv1.DeleteMemberRequest{Name: "orgs/acme/members/" + user})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "owns agents") {
			t.Errorf("DeleteMember(%s, named by an agent) = %v, want FAILED_PRECONDITION naming the agents", user, err)
		}
	}

	// Updates: the masked fields only; new users must be members.
	s.addMember(t, "cat")
	s.clock.Advance(time.Minute)
	upd, err := s.client.UpdateAgent(admin, &identityv1.UpdateAgentRequest{
		Agent: &identityv1.Agent{Name: ag.GetName(), Owner: "users/cat", RiskTier: identityv1.RiskTier_RISK_TIER_CRITICAL,
			DisplayName: "not applied"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"owner", "risk_tier", "acts_for"}}})
	if err != nil {
		t.Fatal(err)
	}
	u := upd.GetAgent()
	want = &identityv1.Agent{Name: ag.GetName(), DisplayName: "Triage", Description: "labels issues", Owner: "users/cat",
		RiskTier: identityv1.RiskTier_RISK_TIER_CRITICAL, CreateTime: ag.GetCreateTime(), UpdateTime: u.GetUpdateTime()}
	if diff := cmp.Diff(want, u, protocmp.Transform()); diff != "" {
		t.Errorf("updated agent mismatch (-want +got):\n%s", diff)
	}
	if !u.GetUpdateTime().AsTime().After(ag.GetUpdateTime().AsTime()) {
		t.Errorf("update_time %v did not move past %v", u.GetUpdateTime().AsTime(), ag.GetUpdateTime().AsTime())
	}
	// ann and bob are free to go now.
	for _, user := range []string{"ann", "bob"} {
		if _, err := s.client.DeleteMember(admin, &identityv1.DeleteMemberRequest{Name: "orgs/acme/members/" + user}); err != nil {
			t.Errorf("DeleteMember(%s, no longer named) = %v", user, err)
		}
	}
	updates := []struct {
		name  string
		agent *identityv1.Agent
		paths []string
		code  codes.Code
	}{
		{"empty mask", &identityv1.Agent{Name: ag.GetName(), DisplayName: "x"}, nil, codes.InvalidArgument},
		{"name", &identityv1.Agent{Name: ag.GetName()}, []string{"name"}, codes.InvalidArgument},
		{"create_time", &identityv1.Agent{Name: ag.GetName(), CreateTime: timestamppb.New(time.Unix(0, 0))}, []string{"create_time"}, codes.InvalidArgument},
		{"update_time", &identityv1.Agent{Name: ag.GetName(), UpdateTime: timestamppb.New(time.Unix(0, 0))}, []string{"risk_tier", "update_time"}, codes.InvalidArgument},
		{"owner cleared", &identityv1.Agent{Name: ag.GetName()}, []string{"owner"}, codes.InvalidArgument},
		{"risk tier cleared", &identityv1.Agent{Name: ag.GetName()}, []string{"risk_tier"}, codes.InvalidArgument},
		{"owner who left", &identityv1.Agent{Name: ag.GetName(), Owner: "users/ann"}, []string{"owner"}, codes.FailedPrecondition},
		{"acts_for who left", &identityv1.Agent{Name: ag.GetName(), ActsFor: "users/bob"}, []string{"acts_for"}, codes.FailedPrecondition},
		{"missing agent", &identityv1.Agent{Name: project + "/agents/missing", DisplayName: "x"}, []string{"display_name"}, codes.NotFound},
		{"malformed name", &identityv1.Agent{Name: project + "/agents/", DisplayName: "x"}, []string{"display_name"}, codes.InvalidArgument},
	}
	for _, tt := range updates {
		_, err := s.client.UpdateAgent(admin, &identityv1.UpdateAgentRequest{Agent: tt.agent, UpdateMask: &fieldmaskpb.FieldMask{Paths: tt.paths}})
		if status.Code(err) != tt.code {
			t.Errorf("UpdateAgent(%s) = %v, want %v", tt.name, err, tt.code)
		}
	}
	if got, err := s.client.GetAgent(admin, &identityv1.GetAgentRequest{Name: ag.GetName()}); err != nil || !proto.Equal(got.GetAgent(), u) {
		t.Errorf("after refused updates: %v, %v; want %v", got, err, u)
	}

	del, err := s.client.DeleteAgent(admin, &identityv1.DeleteAgentRequest{Name: ag.GetName()})
	if err != nil || del.GetRevokedKeys() != 0 {
		t.Fatalf("DeleteAgent = %v, %v", del, err)
	}
	if _, err := s.client.GetAgent(admin, &identityv1.GetAgentRequest{Name: ag.GetName()}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAgent(deleted) = %v, want NOT_FOUND", err)
	}
	if _, err := s.client.DeleteMember(admin, &identityv1.DeleteMemberRequest{Name: "orgs/acme/members/cat"}); err != nil {
		t.Errorf("DeleteMember(owner of a deleted agent) = %v", err)
	}
}

// Keys of service accounts and agents: the owner is the principal's full
// name, on the key and on the key index; only principals of the key's own
// project that exist own keys; deleting a principal revokes its keys in
// the same change, and every receiver drops them within a second.
func TestPrincipalKeys(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	admin := as(t, s.admin)
	s.addMember(t, "ann")
	sa := s.newServiceAccount(t, project, "ci-bot").GetName()
	ag := s.newAgent(t, project, "bot", "users/ann").GetName()
	otherSA := s.newServiceAccount(t, "orgs/acme/projects/api", "ci-bot").GetName()
	stream := watch(t, s)
	recv(t, stream) // the snapshot

	keyOf := func(owner string) *identityv1.CreateApiKeyResponse {
		t.Helper()
		k := s.create(t, &identityv1.CreateApiKeyRequest{ApiKey: &identityv1.ApiKey{DisplayName: "k", Owner: owner}})
		if k.GetApiKey().GetOwner() != owner {
			t.Errorf("key owner = %q, want %q", k.GetApiKey().GetOwner(), owner)
		}
		if e := recv(t, stream).GetUpsert(); e.GetOwner() != owner || e.GetProject() != project {
			t.Errorf("index entry of %s's key = %v, want owner %s", owner, e, owner)
		}
		return k
	}
	saKey, saKey2, agKey := keyOf(sa), keyOf(sa), keyOf(ag)
	eventually(t, time.Second, "the keys to work", func() bool {
		return s.works(saKey.GetKey()) && s.works(saKey2.GetKey()) && s.works(agKey.GetKey())
	})
	p, err := s.index.Authenticate(agKey.GetKey(), s.clock.Now())
	if err != nil || p.Owner != ag {
		t.Errorf("agent key's principal = %+v, %v; want owner %s", p, err, ag)
	}
	list, err := s.client.ListApiKeys(admin, &identityv1.ListApiKeysRequest{Parent: project})
	if err != nil || len(list.GetApiKeys()) != 3 {
		t.Fatalf("ListApiKeys = %v, %v", list, err)
	}

	refused := []struct {
		name  string
		owner string
		code  codes.Code
	}{
		{"another project's service account", otherSA, codes.InvalidArgument},
		{"a missing service account", project + "/serviceAccounts/missing", codes.FailedPrecondition},
		{"a missing agent", project + "/agents/missing", codes.FailedPrecondition},
		{"a malformed principal", project + "/robots/r2d2", codes.InvalidArgument},
		{"a user who is not a member", "users/stranger", codes.FailedPrecondition},
	}
	for _, tt := range refused {
		_, err := s.client.CreateApiKey(admin, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{Owner: tt.owner}})
		if status.Code(err) != tt.code {
			t.Errorf("CreateApiKey(owner %s) = %v, want %v", tt.name, err, tt.code)
		}
	}

	// A rotated key keeps its owner.
	rot, err := s.client.RotateApiKey(admin, &identityv1.RotateApiKeyRequest{Name: saKey2.GetApiKey().GetName(), GracePeriod: durationpb.New(0)})
	if err != nil || rot.GetNewApiKey().GetOwner() != sa {
		t.Fatalf("RotateApiKey = %v, %v; want a successor owned by %s", rot.GetNewApiKey(), err, sa)
	}
	recv(t, stream) // the successor
	recv(t, stream) // the old key, expired at once
	eventually(t, time.Second, "the successor to work", func() bool { return s.works(rot.GetKey()) })

	// The owner of the agent may not leave while it owns it.
	if _, err := s.client.DeleteMember(admin, &identityv1.DeleteMemberRequest{Name: "orgs/acme/members/ann"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("DeleteMember(the agent's owner) = %v, want FAILED_PRECONDITION", err)
	}
	if !s.works(agKey.GetKey()) {
		t.Error("a refused DeleteMember stopped the agent's key")
	}

	start := time.Now()
	del, err := s.client.DeleteAgent(admin, &identityv1.DeleteAgentRequest{Name: ag})
	if err != nil || del.GetRevokedKeys() != 1 {
		t.Fatalf("DeleteAgent = %v, %v; want 1 key revoked", del, err)
	}
	if id := recv(t, stream).GetRemoveKeyId(); !strings.HasSuffix(agKey.GetApiKey().GetName(), "/"+id) {
		t.Errorf("stream after DeleteAgent removed %q, want the agent's key", id)
	}
	eventually(t, time.Second, "the agent's key to stop working", func() bool { return !s.works(agKey.GetKey()) })
	t.Logf("agent key refused %v after the deletion", time.Since(start))

	// Every key not revoked before is revoked: the one rotated away (and
	// expired) too.
	del2, err := s.client.DeleteServiceAccount(admin, &identityv1.DeleteServiceAccountRequest{Name: sa})
	if err != nil || del2.GetRevokedKeys() != 3 {
		t.Fatalf("DeleteServiceAccount = %v, %v; want 3 keys revoked", del2, err)
	}
	var removed []string
	for range 3 {
		removed = append(removed, recv(t, stream).GetRemoveKeyId())
	}
	if len(removed) != 3 || removed[0] == "" {
		t.Errorf("stream after DeleteServiceAccount = %v, want 3 removals", removed)
	}
	eventually(t, time.Second, "the service account's keys to stop working", func() bool {
		return !s.works(saKey.GetKey()) && !s.works(rot.GetKey())
	})
	list, err = s.client.ListApiKeys(admin, &identityv1.ListApiKeysRequest{Parent: project})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range list.GetApiKeys() {
		if k.GetRevokeTime() == nil {
			t.Errorf("key %s of a deleted principal is not revoked", k.GetName())
		}
	}
	// A deleted principal owns no new key; its id, used again, starts
	// without keys.
	if _, err := s.client.CreateApiKey(admin, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{Owner: sa}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("CreateApiKey(owner deleted) = %v, want FAILED_PRECONDITION", err)
	}
	s.newServiceAccount(t, project, "ci-bot")
	if del, err := s.client.DeleteServiceAccount(admin, &identityv1.DeleteServiceAccountRequest{Name: sa}); err != nil || del.GetRevokedKeys() != 0 {
		t.Errorf("DeleteServiceAccount(reused id) = %v, %v; want no keys revoked", del, err)
	}
	if s.works(saKey.GetKey()) {
		t.Error("a revoked key works again")
	}
	assertNoSecret(t, s, saKey.GetKey())
}

// Every service account and agent mutation, allowed or refused, leaves
// exactly one audit event with the right fields (RELIABILITY 19).
func TestPrincipalAudit(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.addMember(t, "ann")
	projectKey := s.create(t, &identityv1.CreateApiKeyRequest{})
	eventually(t, time.Second, "the project key in the index", func() bool { return s.works(projectKey.GetKey()) })
	admin := "keys/" + s.adminID.ID
	projectActor := "keys/" + strings.TrimPrefix(projectKey.GetApiKey().GetName(), project+"/keys/")
	sa := project + "/serviceAccounts/audited"
	ag := project + "/agents/audited"
	const svc = "moat.identity.v1.IdentityService."

	type mutation struct {
		method string
		target string // of a refused call: the name in the request, or the parent
		call   func(ctx context.Context) error
	}
	createSA := mutation{"CreateServiceAccount", project, func(ctx context.Context) error {
		_, err := s.client.CreateServiceAccount(ctx, &identityv1.CreateServiceAccountRequest{Parent: project, ServiceAccountId: "audited",
			ServiceAccount: &identityv1.ServiceAccount{}})
		return err
	}}
	updateSA := mutation{"UpdateServiceAccount", sa, func(ctx context.Context) error {
		_, err := s.client.UpdateServiceAccount(ctx, &identityv1.UpdateServiceAccountRequest{ServiceAccount: &identityv1.ServiceAccount{Name: sa, DisplayName: "x"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
		return err
	}}
	deleteSA := mutation{"DeleteServiceAccount", sa, func(ctx context.Context) error {
		_, err := s.client.DeleteServiceAccount(ctx, &identityv1.DeleteServiceAccountRequest{Name: sa})
		return err
	}}
	createAgent := mutation{"CreateAgent", project, func(ctx context.Context) error {
		_, err := s.client.CreateAgent(ctx, &identityv1.CreateAgentRequest{Parent: project, AgentId: "audited",
			Agent: &identityv1.Agent{Owner: "users/ann", RiskTier: identityv1.RiskTier_RISK_TIER_HIGH}})
		return err
	}}
	updateAgent := mutation{"UpdateAgent", ag, func(ctx context.Context) error {
		_, err := s.client.UpdateAgent(ctx, &identityv1.UpdateAgentRequest{Agent: &identityv1.Agent{Name: ag, RiskTier: identityv1.RiskTier_RISK_TIER_LOW},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"risk_tier"}}})
		return err
	}}
	deleteAgent := mutation{"DeleteAgent", ag, func(ctx context.Context) error {
		_, err := s.client.DeleteAgent(ctx, &identityv1.DeleteAgentRequest{Name: ag})
		return err
	}}
	event := func(actor, action, target string, outcome auditv1.AuditEvent_Outcome, st string) *auditv1.AuditEvent {
		return &auditv1.AuditEvent{Organization: "orgs/acme", Actor: actor, Action: svc + action, Target: target, Outcome: outcome, Status: st}
	}
	allowed, denied := auditv1.AuditEvent_OUTCOME_ALLOWED, auditv1.AuditEvent_OUTCOME_DENIED

	type step struct {
		name string
		key  string
		m    mutation
		want *auditv1.AuditEvent
	}
	var steps []step
	// Refused before anything exists: unauthenticated, forbidden, not found.
	for _, m := range []mutation{createSA, updateSA, deleteSA, createAgent, updateAgent, deleteAgent} {
		steps = append(steps,
			step{m.method + " without a key", "", m, event("anonymous", m.method, m.target, denied, "UNAUTHENTICATED")},
			step{m.method + " with a project key", projectKey.GetKey(), m, event(projectActor, m.method, m.target, denied, "PERMISSION_DENIED")},
		)
	}
	steps = append(steps,
		step{"UpdateServiceAccount missing", s.admin, updateSA, event(admin, "UpdateServiceAccount", sa, denied, "NOT_FOUND")},
		step{"DeleteAgent missing", s.admin, deleteAgent, event(admin, "DeleteAgent", ag, denied, "NOT_FOUND")},
		// Allowed: the target is the principal.
		step{"CreateServiceAccount", s.admin, createSA, event(admin, "CreateServiceAccount", sa, allowed, "OK")},
		step{"CreateServiceAccount again", s.admin, createSA, event(admin, "CreateServiceAccount", project, denied, "ALREADY_EXISTS")},
		step{"UpdateServiceAccount", s.admin, updateSA, event(admin, "UpdateServiceAccount", sa, allowed, "OK")},
		step{"DeleteServiceAccount", s.admin, deleteSA, event(admin, "DeleteServiceAccount", sa, allowed, "OK")},
		step{"CreateAgent", s.admin, createAgent, event(admin, "CreateAgent", ag, allowed, "OK")},
		step{"UpdateAgent", s.admin, updateAgent, event(admin, "UpdateAgent", ag, allowed, "OK")},
		step{"DeleteAgent", s.admin, deleteAgent, event(admin, "DeleteAgent", ag, allowed, "OK")},
		step{"CreateAgent invalid", s.admin, mutation{"CreateAgent", project, func(ctx context.Context) error {
			_, err := s.client.CreateAgent(ctx, &identityv1.CreateAgentRequest{Parent: project, AgentId: "x", Agent: &identityv1.Agent{}})
			return err
		}}, event(admin, "CreateAgent", project, denied, "INVALID_ARGUMENT")},
		step{"CreateAgent for a stranger", s.admin, mutation{"CreateAgent", project, func(ctx context.Context) error {
			_, err := s.client.CreateAgent(ctx, &identityv1.CreateAgentRequest{Parent: project, AgentId: "stray",
				Agent: &identityv1.Agent{Owner: "users/stranger", RiskTier: identityv1.RiskTier_RISK_TIER_LOW}})
			return err
		}}, event(admin, "CreateAgent", project, denied, "FAILED_PRECONDITION")},
	)
	for _, st := range steps {
		deleteOutbox(t, s.pool)
		ctx := metadata.AppendToOutgoingContext(as(t, st.key), "x-request-id", "req-"+st.name)
		_ = st.m.call(ctx) // the outcome is checked through the one audit record it leaves
		got := audits(t, s.pool)
		if len(got) != 1 {
			t.Errorf("%s: %d audit events, want exactly 1: %v", st.name, len(got), got)
			continue
		}
		ev := got[0]
		want := proto.Clone(st.want).(*auditv1.AuditEvent)
		want.RequestId = "req-" + st.name
		if !strings.HasPrefix(ev.GetSourceAddress(), "127.0.0.1:") {
			t.Errorf("%s: source address %q, want the loopback peer", st.name, ev.GetSourceAddress())
		}
		if d := time.Since(ev.GetEventTime().AsTime()); d < 0 || d > time.Minute {
			t.Errorf("%s: event time %v is not now", st.name, ev.GetEventTime().AsTime())
		}
		want.SourceAddress, want.EventTime = ev.GetSourceAddress(), ev.GetEventTime()
		if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
			t.Errorf("%s: audit event mismatch (-want +got):\n%s", st.name, diff)
		}
	}

	// Reads are not audited.
	deleteOutbox(t, s.pool)
	if _, err := s.client.ListAgents(as(t, s.admin), &identityv1.ListAgentsRequest{Parent: project}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.GetServiceAccount(as(t, s.admin), &identityv1.GetServiceAccountRequest{Name: sa}); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}
	if n := len(audits(t, s.pool)); n != 0 {
		t.Errorf("%d audit events for reads, want 0", n)
	}
}
