package identity

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/moat-ai/moat/libs/pagetoken"
)

// OrgRole is what a user may do in one organization.
type OrgRole int

// The organization roles. The zero value means no role.
const (
	// OrgAdmin manages the organization.
	OrgAdmin OrgRole = iota + 1
	// OrgMember uses it and manages their own keys.
	OrgMember
)

// String returns the role as stored: "org_admin" or "member".
func (r OrgRole) String() string {
	switch r {
	case OrgAdmin:
		return "org_admin"
	case OrgMember:
		return "member"
	default:
		return ""
	}
}

// ParseOrgRole is String's inverse; anything else is the zero role.
func ParseOrgRole(s string) OrgRole {
	switch s {
	case "org_admin":
		return OrgAdmin
	case "member":
		return OrgMember
	default:
		return 0
	}
}

// higher reports whether r gives more rights than other.
func (r OrgRole) higher(other OrgRole) bool {
	return r == OrgAdmin && other != OrgAdmin || r == OrgMember && other == 0
}

// Source says how a membership came to be.
type Source string

// The sources of memberships.
const (
	SourceAdmin      Source = "admin"
	SourceJustInTime Source = "just_in_time"
)

// Member is a user's membership of an organization.
type Member struct {
	// Organization is orgs/{org}.
	Organization string
	// UserID is the user's Keycloak id, the sub of their tokens.
	UserID string
	Role   OrgRole
	Source Source
	// IdentityProvider is the provider whose sign-in created a
	// just-in-time membership.
	IdentityProvider string
	// Email is the user's address when the membership was created.
	Email                  string
	CreateTime, UpdateTime time.Time
	// DeleteTime is zero while the membership lasts; an ended membership
	// is kept as a tombstone so that key index watchers learn of it.
	DeleteTime time.Time
	// Version is the key index version of the latest change.
	Version int64
}

// Name is the membership's resource name, orgs/{org}/members/{user}.
func (m Member) Name() string { return m.Organization + "/members/" + m.UserID }

// User is the member's principal name, users/{user}.
func (m Member) User() string { return "users/" + m.UserID }

// Active reports whether the membership lasts.
func (m Member) Active() bool { return m.DeleteTime.IsZero() }

// Errors of memberships.
var (
	// ErrMemberNotFound reports a membership that does not exist (or ended).
	ErrMemberNotFound = errors.New("member not found")
	// ErrMemberExists reports a user who is a member already.
	ErrMemberExists = errors.New("the user is a member of this organization already")
	// ErrOwnMembership reports an org admin changing their own membership,
	// which could lock the organization out; another admin or a platform
	// admin does it.
	ErrOwnMembership = errors.New("org admins cannot change or end their own membership; ask another admin")
	// ErrOwnerNotMember reports a key owner who is not a member of the
	// key's organization.
	ErrOwnerNotMember = errors.New("the key's owner is not a member of its organization")
	// ErrNotOwner reports a member acting on a key they do not own.
	ErrNotOwner = errors.New("permission denied: members may act on their own keys only")
)

// MemberCursor is a position in an organization's member list, oldest first.
type MemberCursor struct {
	CreateTime time.Time
	UserID     string
}

// userIDPattern is the shape of user ids: Keycloak's are UUIDs; other
// issuers' subjects are kept to a safe alphabet.
var userIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$`)

// ParseOrg checks that name is orgs/{org}.
func ParseOrg(name string) error {
	parts := strings.Split(name, "/")
	if len(parts) != 2 || parts[0] != "orgs" || !idPattern.MatchString(parts[1]) {
		return errors.New("must be orgs/{org}, the id 3 to 63 characters of a-z, 0-9 and -, starting with a letter")
	}
	return nil
}

// parseMemberName splits orgs/{org}/members/{user}, by position, so that
// an organization called "members" parses like any other.
func parseMemberName(name string) (org, user string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[2] != "members" || ParseOrg(parts[0]+"/"+parts[1]) != nil || !userIDPattern.MatchString(parts[3]) {
		return "", "", errors.New("must be orgs/{org}/members/{user}, {user} being the user's id")
	}
	return parts[0] + "/" + parts[1], parts[3], nil
}

// UserIDOf returns the id of a users/{user} principal, or "" for any
// other principal.
func UserIDOf(principal string) string {
	id, ok := strings.CutPrefix(principal, "users/")
	if !ok || !userIDPattern.MatchString(id) {
		return ""
	}
	return id
}

// Actor is what the key and member use cases need to know about the caller
// beyond its audit identity: whether it is a signed-in user (User is
// users/{user}), and whether it administers the organization in question
// (an org admin there, or a platform admin).
type Actor struct {
	User          string
	Admin         bool
	PlatformAdmin bool
}

// CreateMember adds user id to org with role. The call is audited in the
// transaction of the change.
func (s *Service) CreateMember(ctx context.Context, call Call, org, userID string, role OrgRole) (Member, error) {
	if err := ParseOrg(org); err != nil {
		return Member{}, invalid("parent", err.Error())
	}
	if !userIDPattern.MatchString(userID) {
		return Member{}, invalid("member_id", "must be the user's id: 1 to 128 characters of A-Z, a-z, 0-9 and ._@:-")
	}
	if role == 0 {
		return Member{}, invalid("member.role", "must be ORG_ROLE_ADMIN or ORG_ROLE_MEMBER")
	}
	now := s.clock()
	m := Member{Organization: org, UserID: userID, Role: role, Source: SourceAdmin, CreateTime: now, UpdateTime: now}
	got, err := s.store.CreateMember(ctx, m, true, func(m Member) AuditRecord { return allowedOn(call, org, m.Name(), now) })
	if err != nil {
		return Member{}, fmt.Errorf("add %s to %s: %w", userID, org, err)
	}
	return got, nil
}

// GetMember returns the membership called name.
func (s *Service) GetMember(ctx context.Context, name string) (Member, error) {
	org, user, err := parseMemberName(name)
	if err != nil {
		return Member{}, invalid("name", err.Error())
	}
	m, err := s.store.GetMember(ctx, org, user)
	if err != nil {
		return Member{}, fmt.Errorf("get %s: %w", name, err)
	}
	return m, nil
}

// ListMembers returns a page of org's members, oldest first.
func (s *Service) ListMembers(ctx context.Context, org string, pageSize int, pageToken string) ([]Member, string, error) {
	if err := ParseOrg(org); err != nil {
		return nil, "", invalid("parent", err.Error())
	}
	size, err := pageSizeOf(pageSize)
	if err != nil {
		return nil, "", err
	}
	var after *MemberCursor
	if pageToken != "" {
		var p struct {
			Micros int64  `json:"t"`
			User   string `json:"u"`
		}
		if err := pagetoken.Decode(pageToken, org+"/members", &p); err != nil || !userIDPattern.MatchString(p.User) {
			return nil, "", invalid("page_token", "is not a page token of this list")
		}
		after = &MemberCursor{CreateTime: time.UnixMicro(p.Micros).UTC(), UserID: p.User}
	}
	ms, err := s.store.ListMembers(ctx, org, after, size+1)
	if err != nil {
		return nil, "", fmt.Errorf("list members of %s: %w", org, err)
	}
	if len(ms) <= size {
		return ms, "", nil
	}
	ms = ms[:size]
	last := ms[size-1]
	next := pagetoken.Encode(org+"/members", struct {
		Micros int64  `json:"t"`
		User   string `json:"u"`
	}{last.CreateTime.UnixMicro(), last.UserID})
	return ms, next, nil
}

// UpdateMember changes the role of the membership called name. Org admins
// cannot change their own (ErrOwnMembership). The call is audited in the
// transaction of the change.
func (s *Service) UpdateMember(ctx context.Context, call Call, actor Actor, name string, role OrgRole) (Member, error) {
	org, user, err := parseMemberName(name)
	if err != nil {
		return Member{}, invalid("member.name", err.Error())
	}
	if role == 0 {
		return Member{}, invalid("member.role", "must be ORG_ROLE_ADMIN or ORG_ROLE_MEMBER")
	}
	if actor.User == "users/"+user && !actor.PlatformAdmin {
		return Member{}, ErrOwnMembership
	}
	now := s.clock()
	m, err := s.store.UpdateMember(ctx, org, user, func(m *Member) bool {
		if m.Role == role {
			return false
		}
		m.Role, m.UpdateTime = role, now
		return true
	}, func(m Member) AuditRecord { return allowedOn(call, org, m.Name(), now) })
	if err != nil {
		return Member{}, fmt.Errorf("update %s: %w", name, err)
	}
	return m, nil
}

// DeleteMember ends the membership called name and revokes every key the
// user owns in the organization, in one transaction with its audit record,
// and returns how many keys it revoked.
func (s *Service) DeleteMember(ctx context.Context, call Call, actor Actor, name string) (int, error) {
	org, user, err := parseMemberName(name)
	if err != nil {
		return 0, invalid("name", err.Error())
	}
	if actor.User == "users/"+user && !actor.PlatformAdmin {
		return 0, ErrOwnMembership
	}
	now := s.clock()
	n, err := s.store.DeleteMember(ctx, org, user, now, func(m Member) AuditRecord { return allowedOn(call, org, m.Name(), now) })
	if err != nil {
		return 0, fmt.Errorf("delete %s: %w", name, err)
	}
	return n, nil
}

// Memberships returns user id's memberships, oldest first.
func (s *Service) Memberships(ctx context.Context, userID string) ([]Member, error) {
	if !userIDPattern.MatchString(userID) {
		return nil, nil
	}
	ms, err := s.store.MembershipsOf(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", userID, err)
	}
	return ms, nil
}

func pageSizeOf(n int) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "must not be negative")
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return n, nil
}

// allowedOn is the audit record of an allowed change to target in org.
func allowedOn(call Call, org, target string, now time.Time) AuditRecord {
	return AuditRecord{Call: call, Organization: org, Target: target, Outcome: OutcomeAllowed, Status: "OK", Time: now}
}
