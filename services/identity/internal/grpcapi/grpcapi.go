// Package grpcapi serves moat.identity.v1.IdentityService: it authorizes
// callers, maps protos to the identity domain and back, audits refused
// mutations, streams the key index, and turns domain errors into gRPC
// statuses in one place (toStatus).
package grpcapi

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/identity/internal/identity"
)

// DefaultRecheck is how often a key index watcher looks for changes when no
// notification woke it, in case one was lost.
const DefaultRecheck = 30 * time.Second

// auditTimeout bounds writing the audit record of a refused call. The write
// ignores the caller's cancellation: hanging up must not skip the record.
const auditTimeout = 5 * time.Second

// Subscriber wakes key index watchers after each change to the keys;
// *pg.Notifier is one.
type Subscriber interface {
	Subscribe() (wake <-chan struct{}, cancel func())
}

// Server implements identityv1.IdentityServiceServer. It is safe for
// concurrent use.
type Server struct {
	identityv1.UnimplementedIdentityServiceServer

	svc  *identity.Service
	keys Subscriber
	log  *slog.Logger
	done <-chan struct{}

	// Recheck is how often key index streams look for changes without a
	// wake-up; DefaultRecheck unless changed before serving.
	Recheck time.Duration
}

// New returns a Server on svc whose key index streams are woken by keys.
// The streams end with UNAVAILABLE when done closes, so that a graceful
// stop does not wait for them and their clients reconnect elsewhere.
func New(svc *identity.Service, keys Subscriber, log *slog.Logger, done <-chan struct{}) *Server {
	return &Server{svc: svc, keys: keys, log: log, done: done, Recheck: DefaultRecheck}
}

// CreateApiKey implements identityv1.IdentityServiceServer.
func (s *Server) CreateApiKey(ctx context.Context, req *identityv1.CreateApiKeyRequest) (*identityv1.CreateApiKeyResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_CreateApiKey_FullMethodName, req.GetRequestId())
	actor, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_MEMBER)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	r := identity.CreateRequest{Parent: req.GetParent(), DisplayName: req.GetApiKey().GetDisplayName(),
		RequestID: req.GetRequestId(), AllowedModels: req.GetApiKey().GetAllowedModels(),
		AllowedMCPTools: req.GetApiKey().GetAllowedMcpTools(), Owner: req.GetApiKey().GetOwner()}
	if req.GetApiKey() == nil {
		return nil, s.refuse(ctx, call, req.GetParent(), &identity.ValidationError{Field: "api_key", Reason: "is required"})
	}
	if ts := req.GetApiKey().GetExpireTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, s.refuse(ctx, call, req.GetParent(), &identity.ValidationError{Field: "api_key.expire_time", Reason: "is not a valid timestamp"})
		}
		r.ExpireTime = ts.AsTime()
	}
	k, secret, err := s.svc.CreateKey(ctx, call, actor, r)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetParent(), err)
	}
	return &identityv1.CreateApiKeyResponse{ApiKey: toAPIKey(k), Key: secret}, nil
}

// ListApiKeys implements identityv1.IdentityServiceServer.
func (s *Server) ListApiKeys(ctx context.Context, req *identityv1.ListApiKeysRequest) (*identityv1.ListApiKeysResponse, error) {
	actor, err := authorize(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_MEMBER)
	if err != nil {
		return nil, toStatus(err)
	}
	keys, next, err := s.svc.ListKeys(ctx, actor, req.GetParent(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &identityv1.ListApiKeysResponse{NextPageToken: next, ApiKeys: make([]*identityv1.ApiKey, len(keys))}
	for i, k := range keys {
		resp.ApiKeys[i] = toAPIKey(k)
	}
	return resp, nil
}

// RevokeApiKey implements identityv1.IdentityServiceServer.
func (s *Server) RevokeApiKey(ctx context.Context, req *identityv1.RevokeApiKeyRequest) (*identityv1.RevokeApiKeyResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_RevokeApiKey_FullMethodName, "")
	actor, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_MEMBER)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	k, err := s.svc.RevokeKey(ctx, call, actor, req.GetName())
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.RevokeApiKeyResponse{ApiKey: toAPIKey(k)}, nil
}

// RotateApiKey implements identityv1.IdentityServiceServer.
func (s *Server) RotateApiKey(ctx context.Context, req *identityv1.RotateApiKeyRequest) (*identityv1.RotateApiKeyResponse, error) {
	call := callOf(ctx, identityv1.IdentityService_RotateApiKey_FullMethodName, req.GetRequestId())
	actor, err := authorize(ctx, req.GetName(), identityv1.OrgRole_ORG_ROLE_MEMBER)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	r := identity.RotateRequest{Name: req.GetName(), RequestID: req.GetRequestId()}
	if d := req.GetGracePeriod(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, s.refuse(ctx, call, req.GetName(), &identity.ValidationError{Field: "grace_period", Reason: "is not a valid duration"})
		}
		grace := d.AsDuration()
		r.GracePeriod = &grace
	}
	old, successor, secret, err := s.svc.RotateKey(ctx, call, actor, r)
	if err != nil {
		return nil, s.refuse(ctx, call, req.GetName(), err)
	}
	return &identityv1.RotateApiKeyResponse{NewApiKey: toAPIKey(successor), Key: secret, OldApiKey: toAPIKey(old)}, nil
}

// errShuttingDown ends key index streams when the server stops.
var errShuttingDown = errors.New("server shutting down")

// WatchKeyIndex implements identityv1.IdentityServiceServer. The
// authentication interceptor admits only callers with the internal token.
func (s *Server) WatchKeyIndex(_ *identityv1.WatchKeyIndexRequest, stream grpc.ServerStreamingServer[identityv1.WatchKeyIndexResponse]) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	go func() {
		select {
		case <-s.done:
			cancel(errShuttingDown)
		case <-ctx.Done():
		}
	}()
	// Subscribe before the snapshot, so that a change committed just after
	// it still wakes the stream.
	wake, unsubscribe := s.keys.Subscribe()
	defer unsubscribe()
	err := s.svc.WatchIndex(ctx, wake, s.Recheck, streamSink{stream})
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		err = cause
	}
	return s.fail(ctx, err)
}

// streamSink sends the key index down a WatchKeyIndex stream.
type streamSink struct {
	stream grpc.ServerStreamingServer[identityv1.WatchKeyIndexResponse]
}

func (x streamSink) Snapshot(version int64, keys []identity.Key, members []identity.Member) error {
	return x.stream.Send(&identityv1.WatchKeyIndexResponse{Version: version,
		Event: &identityv1.WatchKeyIndexResponse_Snapshot{Snapshot: toSnapshot(keys, members)}})
}

func (x streamSink) Member(m identity.Member) error {
	resp := &identityv1.WatchKeyIndexResponse{Version: m.Version}
	if m.Active() {
		resp.Event = &identityv1.WatchKeyIndexResponse_UpsertMembership{UpsertMembership: toMembershipEntry(m)}
	} else {
		resp.Event = &identityv1.WatchKeyIndexResponse_RemoveMembership{RemoveMembership: toMembershipEntry(m)}
	}
	return x.stream.Send(resp)
}

func (x streamSink) Upsert(k identity.Key) error {
	return x.stream.Send(&identityv1.WatchKeyIndexResponse{Version: k.Version,
		Event: &identityv1.WatchKeyIndexResponse_Upsert{Upsert: toEntry(k)}})
}

func (x streamSink) Remove(version int64, id string) error {
	return x.stream.Send(&identityv1.WatchKeyIndexResponse{Version: version,
		Event: &identityv1.WatchKeyIndexResponse_RemoveKeyId{RemoveKeyId: id}})
}

// mutations are the audited methods.
var mutations = map[string]bool{
	identityv1.IdentityService_CreateApiKey_FullMethodName:           true,
	identityv1.IdentityService_RevokeApiKey_FullMethodName:           true,
	identityv1.IdentityService_RotateApiKey_FullMethodName:           true,
	identityv1.IdentityService_CreateMember_FullMethodName:           true,
	identityv1.IdentityService_UpdateMember_FullMethodName:           true,
	identityv1.IdentityService_DeleteMember_FullMethodName:           true,
	identityv1.IdentityService_CreateIdentityProvider_FullMethodName: true,
	identityv1.IdentityService_UpdateIdentityProvider_FullMethodName: true,
	identityv1.IdentityService_DeleteIdentityProvider_FullMethodName: true,
	identityv1.IdentityService_CreateServiceAccount_FullMethodName:   true,
	identityv1.IdentityService_UpdateServiceAccount_FullMethodName:   true,
	identityv1.IdentityService_DeleteServiceAccount_FullMethodName:   true,
	identityv1.IdentityService_CreateAgent_FullMethodName:            true,
	identityv1.IdentityService_UpdateAgent_FullMethodName:            true,
	identityv1.IdentityService_DeleteAgent_FullMethodName:            true,
}

type targetKey struct{}

// target is what the audit record of a refused mutation needs from its
// request.
type target struct {
	name      string
	requestID string
}

// Unary returns an interceptor that notes the target of each key mutation
// in its context, so that Denied can audit a call the authentication
// interceptor refuses before any handler ran. Install it before (outside)
// the authentication interceptor.
func (s *Server) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch r := req.(type) {
		case *identityv1.CreateApiKeyRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetParent(), requestID: r.GetRequestId()})
		case *identityv1.RevokeApiKeyRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName()})
		case *identityv1.RotateApiKeyRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName(), requestID: r.GetRequestId()})
		case *identityv1.CreateMemberRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetParent()})
		case *identityv1.UpdateMemberRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetMember().GetName()})
		case *identityv1.DeleteMemberRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName()})
		case *identityv1.CreateIdentityProviderRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetParent()})
		case *identityv1.UpdateIdentityProviderRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetIdentityProvider().GetName()})
		case *identityv1.DeleteIdentityProviderRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName()})
		case *identityv1.CreateServiceAccountRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetParent()})
		case *identityv1.UpdateServiceAccountRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetServiceAccount().GetName()})
		case *identityv1.DeleteServiceAccountRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName()})
		case *identityv1.CreateAgentRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetParent()})
		case *identityv1.UpdateAgentRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetAgent().GetName()})
		case *identityv1.DeleteAgentRequest:
			ctx = context.WithValue(ctx, targetKey{}, target{name: r.GetName()})
		}
		return handler(ctx, req)
	}
}

// Denied is the authentication interceptor's hook: it audits the refused
// call when it is a key mutation. err is the status the caller gets.
func (s *Server) Denied(ctx context.Context, fullMethod string, err error) {
	if !mutations[fullMethod] {
		return
	}
	t, _ := ctx.Value(targetKey{}).(target)
	s.record(ctx, callOf(ctx, fullMethod, t.requestID), t.name, status.Code(err))
}

// refuse audits a mutation that changed nothing and returns the status the
// caller gets.
func (s *Server) refuse(ctx context.Context, call identity.Call, target string, err error) error {
	st := s.fail(ctx, err)
	s.record(ctx, call, target, status.Code(st))
	return st
}

// fail maps err to its status and logs the errors callers cannot act on.
func (s *Server) fail(ctx context.Context, err error) error {
	st := toStatus(err)
	switch status.Code(st) {
	case codes.Internal, codes.Unknown, codes.Unavailable:
		if !errors.Is(err, errShuttingDown) {
			s.log.ErrorContext(ctx, "identity call failed", "err", err)
		}
	}
	return st
}

// record writes the audit record of a refused or failed mutation. A record
// that cannot be written is logged: the caller's outcome stays the same.
func (s *Server) record(ctx context.Context, call identity.Call, target string, c codes.Code) {
	outcome := identity.OutcomeDenied
	switch c {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.NotFound,
		codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange:
	default:
		outcome = identity.OutcomeFailed
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := s.svc.RecordRefusal(actx, call, target, outcome, code.Code_name[int32(c)]); err != nil { //nolint:gosec // gRPC codes are small
		s.log.ErrorContext(ctx, "audit a refused call", "action", call.Action, "err", err)
	}
}

// maxRequestID bounds the x-request-id a caller may send into an audit
// record.
const maxRequestID = 128

// callOf describes the call in ctx for its audit record. The request id is
// the AIP-155 request id if the request has one, else the caller's
// x-request-id, else the trace id.
func callOf(ctx context.Context, fullMethod, requestID string) identity.Call {
	c := identity.Call{
		Actor:         "anonymous",
		Action:        Action(fullMethod),
		SourceAddress: authn.CallerAddress(ctx),
		RequestID:     requestID,
	}
	if p, ok := authn.FromContext(ctx); ok {
		c.Actor = p.Subject
	}
	if c.RequestID == "" {
		if v := metadata.ValueFromIncomingContext(ctx, "x-request-id"); len(v) > 0 && len(v[0]) <= maxRequestID {
			c.RequestID = strings.ToValidUTF8(v[0], "")
		}
	}
	if sc := trace.SpanContextFromContext(ctx); c.RequestID == "" && sc.HasTraceID() {
		c.RequestID = sc.TraceID().String()
	}
	return c
}

// Action turns a full gRPC method name (/pkg.Service/Method) into the
// audit action, pkg.Service.Method.
func Action(fullMethod string) string {
	return strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", ".")
}

// toStatus is the only place identity errors become gRPC statuses.
// Messages never quote keys: domain errors carry names and prefixes only.
func toStatus(err error) error {
	var verr *identity.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, authn.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "a valid API key is required")
	case errors.Is(err, authn.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, authn.DeniedMessage)
	case errors.Is(err, identity.ErrNotOwner):
		return status.Error(codes.PermissionDenied, identity.ErrNotOwner.Error())
	case kindOf(err, notFound) != nil:
		return status.Error(codes.NotFound, kindOf(err, notFound).Error())
	case errors.Is(err, identity.ErrDomainTaken):
		// The domain is the caller's own input: naming it helps.
		return status.Error(codes.AlreadyExists, messageFrom(err, identity.ErrDomainTaken))
	case kindOf(err, exists) != nil:
		return status.Error(codes.AlreadyExists, kindOf(err, exists).Error())
	case errors.Is(err, identity.ErrOwnMembership):
		return status.Error(codes.FailedPrecondition, identity.ErrOwnMembership.Error())
	case errors.Is(err, identity.ErrOwnerNotMember):
		return status.Error(codes.FailedPrecondition, identity.ErrOwnerNotMember.Error())
	case errors.Is(err, identity.ErrOwnerNotFound):
		return status.Error(codes.FailedPrecondition, identity.ErrOwnerNotFound.Error())
	case errors.Is(err, identity.ErrAgentUserNotMember):
		return status.Error(codes.FailedPrecondition, identity.ErrAgentUserNotMember.Error())
	case errors.Is(err, identity.ErrMemberHasAgents):
		return status.Error(codes.FailedPrecondition, identity.ErrMemberHasAgents.Error())
	case errors.Is(err, identity.ErrNoBroker):
		return status.Error(codes.FailedPrecondition, identity.ErrNoBroker.Error())
	case errors.Is(err, identity.ErrInvalidIdP):
		return status.Error(codes.InvalidArgument, messageFrom(err, identity.ErrInvalidIdP))
	case errors.Is(err, identity.ErrBroker):
		// Keycloak is down or failed: nothing was changed, and a retry
		// may work. Its message never carries the client secret.
		return status.Error(codes.Unavailable, messageFrom(err, identity.ErrBroker))
	case errors.Is(err, identity.ErrNotActive):
		return status.Error(codes.FailedPrecondition, identity.ErrNotActive.Error())
	case errors.Is(err, identity.ErrRequestIDReused):
		return status.Error(codes.AlreadyExists, identity.ErrRequestIDReused.Error())
	case errors.As(err, &verr):
		st := status.New(codes.InvalidArgument, verr.Error())
		if d, derr := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: verr.Field, Description: verr.Reason}},
		}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, identity.ErrUnavailable):
		return status.Error(codes.Unavailable, "the identity database is unavailable; retry later")
	case errors.Is(err, errShuttingDown):
		return status.Error(codes.Unavailable, "identity is shutting down; reconnect")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.Error(codes.Internal, "internal error") // the full error is logged with the trace id
	}
}

func toAPIKey(k identity.Key) *identityv1.ApiKey {
	return &identityv1.ApiKey{
		Name:        k.Name(),
		DisplayName: k.DisplayName,
		Prefix:      k.Prefix,
		CreateTime:  timestamppb.New(k.CreateTime),
		ExpireTime:  timestamp(k.ExpireTime),
		RevokeTime:  timestamp(k.RevokeTime),
		LastUseTime: timestamp(k.LastUseTime),
		// A copy: the proto must not alias the domain key.
		AllowedModels:   append([]string(nil), k.AllowedModels...),
		Owner:           k.Owner,
		AllowedMcpTools: append([]string(nil), k.AllowedMCPTools...),
	}
}

func toEntry(k identity.Key) *identityv1.KeyIndexEntry {
	role := identityv1.KeyIndexEntry_ROLE_UNSPECIFIED
	switch k.Role {
	case identity.RoleProject:
		role = identityv1.KeyIndexEntry_ROLE_PROJECT
	case identity.RolePlatformAdmin:
		role = identityv1.KeyIndexEntry_ROLE_PLATFORM_ADMIN
	}
	return &identityv1.KeyIndexEntry{
		KeyId:         k.ID,
		KeyHmac:       k.HMAC,
		Role:          role,
		Organization:  k.Organization,
		Project:       k.Project,
		ExpireTime:    timestamp(k.ExpireTime),
		Prefix:        k.Prefix,
		AllowedModels: append([]string(nil), k.AllowedModels...),
		Owner:         k.Owner,
		// A copy, like AllowedModels.
		AllowedMcpTools: append([]string(nil), k.AllowedMCPTools...),
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
