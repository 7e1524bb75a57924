// Package grpcapi serves moat.billing.v1.BillingService: it authorizes the
// caller, maps requests to the billing domain and its results back to
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
	billingv1 "github.com/moat-ai/moat/proto/gen/go/moat/billing/v1"
	identityv1 "github.com/moat-ai/moat/proto/gen/go/moat/identity/v1"
	"github.com/moat-ai/moat/services/billing/internal/billing"
)

// Server implements billingv1.BillingServiceServer.
type Server struct {
	billingv1.UnimplementedBillingServiceServer
	svc *billing.Service
	log *slog.Logger
}

// New returns a Server answering from svc; internal errors are logged to
// log (with the trace id) and reach the client only as "internal error".
func New(svc *billing.Service, log *slog.Logger) *Server {
	return &Server{svc: svc, log: log}
}

// ListUsageEntries lists the entries of an organization or a project,
// newest first.
func (s *Server) ListUsageEntries(ctx context.Context, req *billingv1.ListUsageEntriesRequest) (*billingv1.ListUsageEntriesResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.fail(ctx, err)
	}
	page, err := s.svc.ListEntries(ctx, req.GetParent(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp := &billingv1.ListUsageEntriesResponse{
		UsageEntries:  make([]*billingv1.UsageEntry, 0, len(page.Entries)),
		NextPageToken: page.NextPageToken,
	}
	for _, e := range page.Entries {
		resp.UsageEntries = append(resp.UsageEntries, toProto(e))
	}
	return resp, nil
}

// GetUsageTotals sums the entries of an organization or a project.
func (s *Server) GetUsageTotals(ctx context.Context, req *billingv1.GetUsageTotalsRequest) (*billingv1.GetUsageTotalsResponse, error) {
	if err := authn.Require(ctx, req.GetParent(), identityv1.OrgRole_ORG_ROLE_ADMIN); err != nil {
		return nil, s.fail(ctx, err)
	}
	t, err := s.svc.Totals(ctx, req.GetParent())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return &billingv1.GetUsageTotalsResponse{Totals: &billingv1.UsageTotals{
		EntryCount:            t.EntryCount,
		InputTokens:           t.InputTokens,
		CacheReadInputTokens:  t.CacheReadInputTokens,
		CacheWriteInputTokens: t.CacheWriteInputTokens,
		OutputTokens:          t.OutputTokens,
		ReasoningTokens:       t.ReasoningTokens,
		CostMicros:            t.CostMicros,
		CurrencyCode:          t.Currency,
		UnpricedCount:         t.UnpricedCount,
		EstimatedCount:        t.EstimatedCount,
	}}, nil
}

// EntryName is an entry's resource name: orgs/{org}/usageEntries/{event_id}.
func EntryName(e billing.Entry) string {
	return e.Organization + "/usageEntries/" + e.EventID.String()
}

func toProto(e billing.Entry) *billingv1.UsageEntry {
	return &billingv1.UsageEntry{
		Name:                  EntryName(e),
		Project:               e.Project,
		KeyId:                 e.KeyID,
		Model:                 e.Model,
		UpstreamModel:         e.UpstreamModel,
		InputTokens:           e.InputTokens,
		CacheReadInputTokens:  e.CacheReadInputTokens,
		CacheWriteInputTokens: e.CacheWriteInputTokens,
		OutputTokens:          e.OutputTokens,
		ReasoningTokens:       e.ReasoningTokens,
		UsageEstimated:        e.UsageEstimated,
		CostMicros:            e.CostMicros,
		CurrencyCode:          e.Currency,
		Priced:                e.Priced,
		PriceVersion:          e.PriceVersion,
		RequestTime:           timestamppb.New(e.RequestTime),
		RecordTime:            timestamppb.New(e.RecordTime),
	}
}

// fail returns err as a status, logging it first when the client only
// learns that something went wrong inside.
func (s *Server) fail(ctx context.Context, err error) error {
	st := toStatus(err)
	if status.Code(st) == codes.Internal {
		s.log.ErrorContext(ctx, "billing request failed", "err", err)
	}
	return st
}

// toStatus is the only place billing errors become gRPC statuses.
func toStatus(err error) error {
	var verr *billing.ValidationError
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
	case errors.Is(err, billing.ErrUnavailable):
		return status.Error(codes.Unavailable, "the ledger database is unavailable; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.Error(codes.Internal, "internal error") // the full error is logged with the trace id
	}
}
