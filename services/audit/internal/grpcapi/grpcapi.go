// Package grpcapi serves moat.audit.v1.AuditService: it authorizes the
// caller, maps requests to the audit domain and its records back to
// protos, and turns domain errors into gRPC statuses in one place.
package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/moat-ai/moat/libs/authn"
	auditv1 "github.com/moat-ai/moat/proto/gen/go/moat/audit/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/audit/internal/audit"
)

// Server implements auditv1.AuditServiceServer.
type Server struct {
	auditv1.UnimplementedAuditServiceServer
	svc *audit.Service
	log *slog.Logger
}

// New returns a Server answering from svc; internal errors are logged to
// log (with the trace id) and reach the client only as "internal error".
func New(svc *audit.Service, log *slog.Logger) *Server {
	return &Server{svc: svc, log: log}
}

// ListAuditEvents lists an organization's audit records, newest first.
func (s *Server) ListAuditEvents(ctx context.Context, req *auditv1.ListAuditEventsRequest) (*auditv1.ListAuditEventsResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.fail(ctx, err)
	}
	page, err := s.svc.List(ctx, req.GetParent(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &auditv1.ListAuditEventsResponse{
		AuditEvents:   make([]*auditv1.AuditEvent, 0, len(page.Records)),
		NextPageToken: page.NextPageToken,
	}
	for _, r := range page.Records {
		resp.AuditEvents = append(resp.AuditEvents, toProto(r))
	}
	return resp, nil
}

// RecordName is a record's resource name: orgs/{org}/auditEvents/{event_id},
// or auditEvents/{event_id} for a platform-level action.
func RecordName(r audit.Record) string {
	if r.Organization == "" {
		return "auditEvents/" + r.EventID.String()
	}
	return r.Organization + "/auditEvents/" + r.EventID.String()
}

func toProto(r audit.Record) *auditv1.AuditEvent {
	return &auditv1.AuditEvent{
		Name:          RecordName(r),
		Organization:  r.Organization,
		Actor:         r.Actor,
		Action:        r.Action,
		Target:        r.Target,
		Outcome:       outcomeProto(r.Outcome),
		Status:        r.Status,
		SourceAddress: r.SourceAddress,
		RequestId:     r.RequestID,
		EventTime:     timestamppb.New(r.EventTime),
		Producer:      r.Producer,
		RecordTime:    timestamppb.New(r.RecordTime),
	}
}

func outcomeProto(o audit.Outcome) auditv1.AuditEvent_Outcome {
	switch o {
	case audit.OutcomeAllowed:
		return auditv1.AuditEvent_OUTCOME_ALLOWED
	case audit.OutcomeDenied:
		return auditv1.AuditEvent_OUTCOME_DENIED
	case audit.OutcomeFailed:
		return auditv1.AuditEvent_OUTCOME_FAILED
	}
	return auditv1.AuditEvent_OUTCOME_UNSPECIFIED
}

// fail returns err as a status, logging it first when the client only
// learns that something went wrong inside.
func (s *Server) fail(ctx context.Context, err error) error {
	st := toStatus(err)
	if status.Code(st) == codes.Internal {
		s.log.ErrorContext(ctx, "audit request failed", "err", err)
	}
	return st
}

// toStatus is the only place audit errors become gRPC statuses.
func toStatus(err error) error {
	var verr *audit.ValidationError
	switch {
	case errors.Is(err, authn.ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, "missing or invalid credentials")
	case errors.Is(err, authn.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, authn.DeniedMessage)
	case errors.As(err, &verr):
		st := status.New(codes.InvalidArgument, verr.Error())
		if d, derr := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: verr.Field, Description: verr.Reason}},
		}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, audit.ErrUnavailable):
		return status.Error(codes.Unavailable, "the audit database is unavailable; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.Error(codes.Internal, "internal error") // the full error is logged with the trace id
	}
}
