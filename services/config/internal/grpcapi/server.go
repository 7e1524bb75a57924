// Package grpcapi serves moat.config.v1.ConfigService: it maps the API onto
// config.Service, authorizes each call by the caller's role (authn.Require),
// audits every mutating call whether it succeeds or not, and streams the
// configuration to gateways.
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
	"google.golang.org/grpc/status"

	"github.com/moat-ai/moat/libs/authn"
	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
)

// Notifier wakes watch streams after a configuration change; *pg.Notifier
// on the store's channel is one.
type Notifier interface {
	Subscribe() (wake <-chan struct{}, cancel func())
}

// Options tune a Server. Zero values take the defaults.
type Options struct {
	Log *slog.Logger
	// Notifier wakes WatchConfig streams; without one they only poll.
	Notifier Notifier
	// Recheck is how often a WatchConfig stream looks for changes without a
	// wake-up (default 3s): a safety net for lost notifications.
	Recheck time.Duration
	// Batch bounds the changes read and sent per round (default 500), and
	// so a stream's memory.
	Batch int
	// Now is the clock of audit records; nil means time.Now.
	Now func() time.Time
}

// Server implements configv1.ConfigServiceServer.
type Server struct {
	configv1.UnimplementedConfigServiceServer

	svc     *config.Service
	log     *slog.Logger
	notify  Notifier
	recheck time.Duration
	batch   int
	now     func() time.Time
	// stopping closes when Run's context ends, ending every watch stream so
	// that a graceful stop need not wait for them.
	stopping chan struct{}
}

// New returns a Server over svc.
func New(svc *config.Service, opts Options) *Server {
	s := &Server{
		svc: svc, log: opts.Log, notify: opts.Notifier, recheck: opts.Recheck, batch: opts.Batch, now: opts.Now,
		stopping: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.recheck <= 0 {
		s.recheck = 3 * time.Second
	}
	if s.batch <= 0 {
		s.batch = 500
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Run returns when ctx ends, after telling every WatchConfig stream to end
// (with UNAVAILABLE, so gateways reconnect to another replica). Run it as a
// worker of the process.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	close(s.stopping)
	return nil
}

// InternalMethods are the methods only Moat's own services may call, with
// the internal token instead of an API key.
var InternalMethods = []string{configv1.ConfigService_WatchConfig_FullMethodName}

// mutating lists the methods that are audited.
var mutating = map[string]bool{
	configv1.ConfigService_CreateOrganization_FullMethodName: true,
	configv1.ConfigService_UpdateOrganization_FullMethodName: true,
	configv1.ConfigService_DeleteOrganization_FullMethodName: true,
	configv1.ConfigService_CreateProject_FullMethodName:      true,
	configv1.ConfigService_UpdateProject_FullMethodName:      true,
	configv1.ConfigService_DeleteProject_FullMethodName:      true,
	configv1.ConfigService_CreateProvider_FullMethodName:     true,
	configv1.ConfigService_UpdateProvider_FullMethodName:     true,
	configv1.ConfigService_DeleteProvider_FullMethodName:     true,
	configv1.ConfigService_CreateRoute_FullMethodName:        true,
	configv1.ConfigService_UpdateRoute_FullMethodName:        true,
	configv1.ConfigService_DeleteRoute_FullMethodName:        true,
}

// Mutating reports whether fullMethod changes configuration (and so is
// audited).
func Mutating(fullMethod string) bool { return mutating[fullMethod] }

// --- auditing

// callKey carries what a refusal audit needs from a request that the
// handler may never see.
type callKey struct{}

type callInfo struct{ target, requestID string }

// Unary returns an interceptor that records the target and request id of
// mutating calls in the context. Install it before the authentication
// interceptor: a call that authentication refuses never reaches its
// handler, and AuditRefusal then finds them there.
func (s *Server) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if mutating[info.FullMethod] {
			target, requestID := targetOf(req)
			ctx = context.WithValue(ctx, callKey{}, callInfo{target: target, requestID: requestID})
		}
		return handler(ctx, req)
	}
}

// targetOf returns what a mutating request acts on (its parent for a
// create) and its request id.
func targetOf(req any) (target, requestID string) {
	switch r := req.(type) {
	case *configv1.CreateOrganizationRequest:
		return "", r.GetRequestId()
	case *configv1.UpdateOrganizationRequest:
		return r.GetOrganization().GetName(), ""
	case *configv1.DeleteOrganizationRequest:
		return r.GetName(), ""
	case *configv1.CreateProjectRequest:
		return r.GetParent(), r.GetRequestId()
	case *configv1.UpdateProjectRequest:
		return r.GetProject().GetName(), ""
	case *configv1.DeleteProjectRequest:
		return r.GetName(), ""
	case *configv1.CreateProviderRequest:
		return r.GetParent(), r.GetRequestId()
	case *configv1.UpdateProviderRequest:
		return r.GetProvider().GetName(), ""
	case *configv1.DeleteProviderRequest:
		return r.GetName(), ""
	case *configv1.CreateRouteRequest:
		return r.GetParent(), r.GetRequestId()
	case *configv1.UpdateRouteRequest:
		return r.GetRoute().GetName(), ""
	case *configv1.DeleteRouteRequest:
		return r.GetName(), ""
	}
	return "", ""
}

// AuditRefusal is the authentication interceptor's Denied hook: it audits
// a refused call of a mutating method, in a transaction of its own.
func (s *Server) AuditRefusal(ctx context.Context, fullMethod string, err error) {
	if !mutating[fullMethod] {
		return
	}
	call, _ := ctx.Value(callKey{}).(callInfo)
	a := s.auditRecord(ctx, fullMethod, call.target, call.requestID)
	s.recordRefusal(ctx, a, status.Code(err))
}

// auditRecord starts the audit record of a call, as if it will succeed.
func (s *Server) auditRecord(ctx context.Context, fullMethod, target, requestID string) config.AuditRecord {
	actor := "anonymous"
	if p, ok := authn.FromContext(ctx); ok {
		actor = p.Subject
	}
	if requestID == "" {
		if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			requestID = sc.TraceID().String()
		}
	}
	a := config.AuditRecord{
		Actor:         actor,
		Action:        strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", "."),
		Outcome:       config.OutcomeAllowed,
		Status:        code.Code_OK.String(),
		SourceAddress: authn.CallerAddress(ctx),
		RequestID:     requestID,
		Time:          s.now().UTC(),
	}
	return a.WithTarget(target)
}

// refuse turns err, which ended a mutating call before it changed
// anything, into the caller's status and audits it.
func (s *Server) refuse(ctx context.Context, a config.AuditRecord, err error) error {
	st := s.status(ctx, err)
	s.recordRefusal(ctx, a, status.Code(st))
	return st
}

func (s *Server) recordRefusal(ctx context.Context, a config.AuditRecord, c codes.Code) {
	a.Status = code.Code(c).String() //nolint:gosec // gRPC codes are small non-negative numbers
	a.Outcome = config.OutcomeDenied
	if serverFault(c) {
		a.Outcome = config.OutcomeFailed
	}
	// The caller may be gone; the record must still be written.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.svc.RecordAudit(actx, a); err != nil {
		s.log.ErrorContext(ctx, "audit record of a refused call lost",
			"action", a.Action, "target", a.Target, "status", a.Status, "err", err)
	}
}

// serverFault reports the codes that mean "authorized, but it failed"
// rather than "refused".
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.Internal, codes.Unavailable, codes.DeadlineExceeded, codes.Canceled,
		codes.ResourceExhausted, codes.Aborted, codes.DataLoss, codes.Unimplemented:
		return true
	}
	return false
}

// --- errors

// status maps err with toStatus and logs what the client does not see.
func (s *Server) status(ctx context.Context, err error) error {
	st := toStatus(err)
	switch status.Code(st) {
	case codes.Internal:
		s.log.ErrorContext(ctx, "internal error", "err", err)
	case codes.Unavailable:
		s.log.WarnContext(ctx, "configuration store unavailable", "err", err)
	}
	return st
}

// toStatus is the only place config errors become gRPC statuses. Internal
// errors never reach the client; the caller logs them with the trace id.
func toStatus(err error) error {
	var verr *config.ValidationError
	switch {
	case errors.As(err, &verr):
		st := status.New(codes.InvalidArgument, verr.Error())
		if d, derr := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: verr.Field, Description: verr.Reason}},
		}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, authn.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "authentication required")
	case errors.Is(err, authn.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, authn.DeniedMessage)
	case errors.Is(err, config.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, config.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, config.ErrInUse):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, config.ErrUnavailable):
		return status.Error(codes.Unavailable, "configuration store unavailable; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.Error(codes.Internal, "internal error")
	}
}
