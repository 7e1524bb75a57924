package grpcapi

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	configv1 "github.com/moat-ai/moat/proto/gen/go/moat/config/v1"
	"github.com/moat-ai/moat/services/config/internal/config"
)

// Mapping between API messages and domain values. Input mappings copy only
// the fields a client may set; output mappings never carry a credential.

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func organizationIn(o *configv1.Organization) config.Organization {
	return config.Organization{Name: o.GetName(), DisplayName: o.GetDisplayName()}
}

func organizationOut(o config.Organization) *configv1.Organization {
	return &configv1.Organization{
		Name:        o.Name,
		DisplayName: o.DisplayName,
		CreateTime:  timestamp(o.CreateTime),
		UpdateTime:  timestamp(o.UpdateTime),
	}
}

func projectIn(p *configv1.Project) config.Project {
	return config.Project{Name: p.GetName(), DisplayName: p.GetDisplayName()}
}

func projectOut(p config.Project) *configv1.Project {
	return &configv1.Project{
		Name:        p.Name,
		DisplayName: p.DisplayName,
		CreateTime:  timestamp(p.CreateTime),
		UpdateTime:  timestamp(p.UpdateTime),
	}
}

// providerIn leaves the credential out: it travels to the service as a
// separate argument and is sealed there.
func providerIn(p *configv1.Provider) config.Provider {
	return config.Provider{
		Name:        p.GetName(),
		DisplayName: p.GetDisplayName(),
		Type:        providerTypeIn(p.GetType()),
		BaseURL:     p.GetBaseUrl(),
	}
}

func providerTypeIn(t configv1.Provider_Type) config.ProviderType {
	switch t {
	case configv1.Provider_TYPE_OPENAI_COMPATIBLE:
		return config.ProviderOpenAICompatible
	default:
		return "" // refused by validation
	}
}

func providerTypeOut(t config.ProviderType) configv1.Provider_Type {
	switch t {
	case config.ProviderOpenAICompatible:
		return configv1.Provider_TYPE_OPENAI_COMPATIBLE
	default:
		return configv1.Provider_TYPE_UNSPECIFIED
	}
}

// providerOut is the provider as the admin API shows it: whether a
// credential is stored, never the credential, sealed or not.
func providerOut(p config.Provider) *configv1.Provider {
	return &configv1.Provider{
		Name:          p.Name,
		DisplayName:   p.DisplayName,
		Type:          providerTypeOut(p.Type),
		BaseUrl:       p.BaseURL,
		HasCredential: p.Credential != nil,
		CreateTime:    timestamp(p.CreateTime),
		UpdateTime:    timestamp(p.UpdateTime),
	}
}

// gatewayProviderOut is the provider as gateways get it: with the sealed
// credential, which only KEK holders can open.
func gatewayProviderOut(p config.Provider) *configv1.GatewayProvider {
	gp := &configv1.GatewayProvider{Provider: providerOut(p)}
	if c := p.Credential; c != nil {
		gp.Credential = &configv1.SealedSecret{KekId: c.KEKID, WrappedKey: c.WrappedKey, Ciphertext: c.Ciphertext}
	}
	return gp
}

func routeIn(r *configv1.Route) config.Route {
	return config.Route{
		Name:          r.GetName(),
		Model:         r.GetModel(),
		Provider:      r.GetProvider(),
		UpstreamModel: r.GetUpstreamModel(),
	}
}

func routeOut(r config.Route) *configv1.Route {
	return &configv1.Route{
		Name:          r.Name,
		Model:         r.Model,
		Provider:      r.Provider,
		UpstreamModel: r.UpstreamModel,
		CreateTime:    timestamp(r.CreateTime),
		UpdateTime:    timestamp(r.UpdateTime),
	}
}

func snapshotOut(snap config.Snapshot) *configv1.WatchConfigResponse {
	rs := make([]*configv1.ConfigResource, 0,
		len(snap.Organizations)+len(snap.Projects)+len(snap.Providers)+len(snap.Routes))
	for _, o := range snap.Organizations {
		rs = append(rs, &configv1.ConfigResource{Resource: &configv1.ConfigResource_Organization{Organization: organizationOut(o)}})
	}
	for _, p := range snap.Projects {
		rs = append(rs, &configv1.ConfigResource{Resource: &configv1.ConfigResource_Project{Project: projectOut(p)}})
	}
	for _, p := range snap.Providers {
		rs = append(rs, &configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: gatewayProviderOut(p)}})
	}
	for _, r := range snap.Routes {
		rs = append(rs, &configv1.ConfigResource{Resource: &configv1.ConfigResource_Route{Route: routeOut(r)}})
	}
	return &configv1.WatchConfigResponse{
		Version: snap.Version,
		Event:   &configv1.WatchConfigResponse_Snapshot{Snapshot: &configv1.ConfigSnapshot{Resources: rs}},
	}
}

func changeOut(c config.Change) *configv1.WatchConfigResponse {
	resp := &configv1.WatchConfigResponse{Version: c.Version}
	var r *configv1.ConfigResource
	switch {
	case c.Deleted:
		resp.Event = &configv1.WatchConfigResponse_DeleteName{DeleteName: c.Name}
		return resp
	case c.Organization != nil:
		r = &configv1.ConfigResource{Resource: &configv1.ConfigResource_Organization{Organization: organizationOut(*c.Organization)}}
	case c.Project != nil:
		r = &configv1.ConfigResource{Resource: &configv1.ConfigResource_Project{Project: projectOut(*c.Project)}}
	case c.Provider != nil:
		r = &configv1.ConfigResource{Resource: &configv1.ConfigResource_Provider{Provider: gatewayProviderOut(*c.Provider)}}
	case c.Route != nil:
		r = &configv1.ConfigResource{Resource: &configv1.ConfigResource_Route{Route: routeOut(*c.Route)}}
	}
	resp.Event = &configv1.WatchConfigResponse_Upsert{Upsert: r}
	return resp
}
