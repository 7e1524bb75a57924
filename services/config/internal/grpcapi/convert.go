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
	out := config.Provider{
		Name:        p.GetName(),
		DisplayName: p.GetDisplayName(),
		Type:        providerTypeIn(p.GetType()),
		BaseURL:     p.GetBaseUrl(),
	}
	if az := p.GetAzure(); az != nil {
		out.Azure = &config.AzureSettings{APIVersion: az.GetApiVersion()}
	}
	if v := p.GetVertex(); v != nil {
		out.Vertex = &config.VertexSettings{Project: v.GetProject(), Location: v.GetLocation()}
	}
	if b := p.GetBedrock(); b != nil {
		out.Bedrock = &config.BedrockSettings{Region: b.GetRegion()}
	}
	return out
}

// providerTypes maps the API's provider types to the domain's; a type
// missing here is refused by validation.
var providerTypes = map[configv1.Provider_Type]config.ProviderType{
	configv1.Provider_TYPE_OPENAI_COMPATIBLE: config.ProviderOpenAICompatible,
	configv1.Provider_TYPE_OPENAI:            config.ProviderOpenAI,
	configv1.Provider_TYPE_AZURE_OPENAI:      config.ProviderAzureOpenAI,
	configv1.Provider_TYPE_ANTHROPIC:         config.ProviderAnthropic,
	configv1.Provider_TYPE_GEMINI:            config.ProviderGemini,
	configv1.Provider_TYPE_VERTEX_AI:         config.ProviderVertexAI,
	configv1.Provider_TYPE_BEDROCK:           config.ProviderBedrock,
}

func providerTypeIn(t configv1.Provider_Type) config.ProviderType {
	return providerTypes[t] // "" when unknown: refused by validation
}

func providerTypeOut(t config.ProviderType) configv1.Provider_Type {
	for api, domain := range providerTypes {
		if domain == t {
			return api
		}
	}
	return configv1.Provider_TYPE_UNSPECIFIED
}

// providerOut is the provider as the admin API shows it: whether a
// credential is stored, never the credential, sealed or not.
func providerOut(p config.Provider) *configv1.Provider {
	out := &configv1.Provider{
		Name:          p.Name,
		DisplayName:   p.DisplayName,
		Type:          providerTypeOut(p.Type),
		BaseUrl:       p.BaseURL,
		HasCredential: p.Credential != nil,
		CreateTime:    timestamp(p.CreateTime),
		UpdateTime:    timestamp(p.UpdateTime),
	}
	if az := p.Azure; az != nil {
		out.Azure = &configv1.AzureSettings{ApiVersion: az.APIVersion}
	}
	if v := p.Vertex; v != nil {
		out.Vertex = &configv1.VertexSettings{Project: v.Project, Location: v.Location}
	}
	if b := p.Bedrock; b != nil {
		out.Bedrock = &configv1.BedrockSettings{Region: b.Region}
	}
	return out
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
