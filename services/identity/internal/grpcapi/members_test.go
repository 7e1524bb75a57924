package grpcapi_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
)

// Memberships travel on the key index stream in version order with the
// keys: a new member, a role change and an ended membership each reach a
// watcher, and ending a membership revokes the keys the user owns in the
// organization, in the same change.
func TestMembershipsOnTheKeyIndex(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	admin := as(t, s.admin)
	stream := watch(t, s)
	if snap := recv(t, stream).GetSnapshot(); len(snap.GetMemberships()) != 0 {
		t.Fatalf("first snapshot has memberships: %v", snap.GetMemberships())
	}

	m, err := s.client.CreateMember(admin, &identityv1.CreateMemberRequest{Parent: "orgs/acme", MemberId: "ann",
		Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_MEMBER}})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetMember(); got.GetName() != "orgs/acme/members/ann" || got.GetUser() != "users/ann" || got.GetSource() != identityv1.Member_SOURCE_ADMIN {
		t.Errorf("CreateMember = %v", got)
	}
	ev := recv(t, stream).GetUpsertMembership()
	if ev.GetUser() != "users/ann" || ev.GetOrganization() != "orgs/acme" || ev.GetRole() != identityv1.OrgRole_ORG_ROLE_MEMBER {
		t.Errorf("stream upsert = %v", ev)
	}
	if _, err := s.client.CreateMember(admin, &identityv1.CreateMemberRequest{Parent: "orgs/acme", MemberId: "ann",
		Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_ADMIN}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("CreateMember(twice) = %v, want ALREADY_EXISTS", err)
	}

	// An admin creates a key for ann: she owns it.
	k := s.create(t, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{DisplayName: "ann's", Owner: "users/ann"}})
	if k.GetApiKey().GetOwner() != "users/ann" {
		t.Errorf("owner = %q", k.GetApiKey().GetOwner())
	}
	if e := recv(t, stream).GetUpsert(); e.GetOwner() != "users/ann" {
		t.Errorf("index entry owner = %q", e.GetOwner())
	}
	// Nobody who is not a member owns a key.
	if _, err := s.client.CreateApiKey(admin, &identityv1.CreateApiKeyRequest{Parent: project,
		ApiKey: &identityv1.ApiKey{Owner: "users/stranger"}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("CreateApiKey(owner not a member) = %v, want FAILED_PRECONDITION", err)
	}

	if _, err := s.client.UpdateMember(admin, &identityv1.UpdateMemberRequest{
		Member:     &identityv1.Member{Name: "orgs/acme/members/ann", Role: identityv1.OrgRole_ORG_ROLE_ADMIN},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"role"}}}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, stream).GetUpsertMembership(); ev.GetRole() != identityv1.OrgRole_ORG_ROLE_ADMIN {
		t.Errorf("stream after role change = %v", ev)
	}

	del, err := s.client.DeleteMember(admin, &identityv1.DeleteMemberRequest{Name: "orgs/acme/members/ann"})
	if err != nil {
		t.Fatal(err)
	}
	if del.GetRevokedKeys() != 1 {
		t.Errorf("revoked %d keys, want 1", del.GetRevokedKeys())
	}
	if ev := recv(t, stream).GetRemoveMembership(); ev.GetUser() != "users/ann" || ev.GetRole() != identityv1.OrgRole_ORG_ROLE_UNSPECIFIED {
		t.Errorf("stream removal = %v", ev)
	}
	if id := recv(t, stream).GetRemoveKeyId(); id == "" {
		t.Error("the member's key did not leave the index")
	}
	eventually(t, time.Second, "the key to stop working", func() bool { return !s.works(k.GetKey()) })
	if _, err := s.client.GetMember(admin, &identityv1.GetMemberRequest{Name: "orgs/acme/members/ann"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetMember(ended) = %v, want NOT_FOUND", err)
	}

	// A fresh watcher's snapshot has the lasting memberships only; a
	// revived membership is back.
	if _, err := s.client.CreateMember(admin, &identityv1.CreateMemberRequest{Parent: "orgs/acme", MemberId: "bob",
		Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_MEMBER}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.CreateMember(admin, &identityv1.CreateMemberRequest{Parent: "orgs/acme", MemberId: "ann",
		Member: &identityv1.Member{Role: identityv1.OrgRole_ORG_ROLE_MEMBER}}); err != nil {
		t.Fatalf("re-adding an ended member: %v", err)
	}
	snap := recv(t, watch(t, s)).GetSnapshot()
	if len(snap.GetMemberships()) != 2 {
		t.Errorf("snapshot memberships = %v, want ann and bob", snap.GetMemberships())
	}
	list, err := s.client.ListMembers(admin, &identityv1.ListMembersRequest{Parent: "orgs/acme", PageSize: 1})
	if err != nil || len(list.GetMembers()) != 1 || list.GetNextPageToken() == "" {
		t.Fatalf("ListMembers(page 1) = %v, %v", list, err)
	}
	next, err := s.client.ListMembers(admin, &identityv1.ListMembersRequest{Parent: "orgs/acme", PageSize: 1, PageToken: list.GetNextPageToken()})
	if err != nil || len(next.GetMembers()) != 1 || next.GetNextPageToken() != "" || next.GetMembers()[0].GetName() == list.GetMembers()[0].GetName() {
		t.Errorf("ListMembers(page 2) = %v, %v", next, err)
	}
	if _, err := s.client.ListMembers(admin, &identityv1.ListMembersRequest{Parent: "orgs/other", PageToken: list.GetNextPageToken()}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListMembers(another list's token) = %v, want INVALID_ARGUMENT", err)
	}
}

// Without Keycloak, identity providers cannot be managed: the refusal says
// why.
func TestIdentityProvidersNeedKeycloak(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	_, err := s.client.CreateIdentityProvider(as(t, s.admin), &identityv1.CreateIdentityProviderRequest{Parent: "orgs/acme",
		IdentityProviderId: "corp", IdentityProvider: &identityv1.IdentityProvider{EmailDomains: []string{"acme.example"},
			Protocol: &identityv1.IdentityProvider_Oidc{Oidc: &identityv1.OidcConfig{Issuer: "https://idp.acme.example", ClientId: "moat", ClientSecret: "x"}}}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "MOAT_KEYCLOAK_URL") {
		t.Errorf("CreateIdentityProvider without Keycloak = %v", err)
	}
}

// A rotation's request id replays the rotation only under the key's own
// name: naming the key under another organization's project is NOT_FOUND,
// and shows neither key.
func TestRotateRetryStaysInItsProject(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	admin := as(t, s.admin)
	k := s.create(t, &identityv1.CreateApiKeyRequest{Parent: project, ApiKey: &identityv1.ApiKey{DisplayName: "rotated"}})
	id := strings.TrimPrefix(k.GetApiKey().GetName(), project+"/keys/")
	const requestID = "0b9b5a4e-5f4c-4c55-9d84-0a1f3c1c2b7e"
	if _, err := s.client.RotateApiKey(admin, &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), RequestId: requestID}); err != nil {
		t.Fatal(err)
	}
	got, err := s.client.RotateApiKey(admin, &identityv1.RotateApiKeyRequest{Name: "orgs/other/projects/web/keys/" + id, RequestId: requestID})
	if status.Code(err) != codes.NotFound || got != nil {
		t.Errorf("RotateApiKey(the key under another org's name, its request id) = %v, %v; want NOT_FOUND", got, err)
	}
	again, err := s.client.RotateApiKey(admin, &identityv1.RotateApiKeyRequest{Name: k.GetApiKey().GetName(), RequestId: requestID})
	if err != nil || again.GetKey() != "" || again.GetOldApiKey().GetName() != k.GetApiKey().GetName() {
		t.Errorf("RotateApiKey(retry under its own name) = %v, %v; want the first rotation without the key", again, err)
	}
}
