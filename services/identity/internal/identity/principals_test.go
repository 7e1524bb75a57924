package identity

import "testing"

func TestParsePrincipal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		wantKind    PrincipalKind
		wantProject string
		wantID      string
	}{
		{"users/ann", PrincipalUser, "", "ann"},
		{"users/0b6f1c9e-8c1e-4a55-b7a4-5f5d1e2f3a4b", PrincipalUser, "", "0b6f1c9e-8c1e-4a55-b7a4-5f5d1e2f3a4b"},
		{"orgs/acme/projects/web/serviceAccounts/ci-bot", PrincipalServiceAccount, "orgs/acme/projects/web", "ci-bot"},
		{"orgs/acme/projects/web/agents/triage", PrincipalAgent, "orgs/acme/projects/web", "triage"},
		{"orgs/agents/projects/agents/agents/agents", PrincipalAgent, "orgs/agents/projects/agents", "agents"},
		{"orgs/acme/projects/agents/serviceAccounts/agents", PrincipalServiceAccount, "orgs/acme/projects/agents", "agents"},
		{"orgs/acme/projects/web/agents/Triage", 0, "", ""},
		{"orgs/acme/projects/web/agents/ab", 0, "", ""},
		{"orgs/acme/projects/web/agents/a/b", 0, "", ""},
		{"orgs/acme/agents/triage", 0, "", ""},
		{"orgs/acme/projects/web/serviceAccounts/", 0, "", ""},
		{"orgs/acme/projects/web/keys/ci-bot", 0, "", ""},
		{"serviceAccounts/ci-bot", 0, "", ""},
		{"users/", 0, "", ""},
		{"users/a b", 0, "", ""},
		{"", 0, "", ""},
	}
	for _, tt := range tests {
		kind, project, id, ok := ParsePrincipal(tt.name)
		if kind != tt.wantKind || project != tt.wantProject || id != tt.wantID || ok != (tt.wantKind != 0) {
			t.Errorf("ParsePrincipal(%q) = %v, %q, %q, %v; want %v, %q, %q", tt.name, kind, project, id, ok, tt.wantKind, tt.wantProject, tt.wantID)
		}
	}
}

func TestRiskTierRoundTrip(t *testing.T) {
	t.Parallel()
	for tier := RiskLow; tier <= RiskCritical; tier++ {
		if got := ParseRiskTier(tier.String()); got != tier {
			t.Errorf("ParseRiskTier(%q) = %v, want %v", tier.String(), got, tier)
		}
	}
	for _, s := range []string{"", "LOW", "severe"} {
		if got := ParseRiskTier(s); got != 0 {
			t.Errorf("ParseRiskTier(%q) = %v, want no tier", s, got)
		}
	}
}
