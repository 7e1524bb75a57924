package billing

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEmbeddedPrices(t *testing.T) {
	t.Parallel()
	p, err := EmbeddedPrices()
	if err != nil {
		t.Fatalf("EmbeddedPrices() = %v", err)
	}
	if p.Version() == "" || p.Currency() != "USD" {
		t.Errorf("EmbeddedPrices() version %q currency %q, want a version and USD", p.Version(), p.Currency())
	}
	// The demo route's mock provider is priced, or the demo shows unpriced
	// entries; the published OpenAI list prices are spot-checked.
	tests := []struct {
		model   string
		in, out int64
		want    int64
	}{
		{"mock-model", 1_000_000, 1_000_000, 3_000_000},
		{"gpt-4o", 1_000_000, 1_000_000, 12_500_000},
		{"gpt-4o-mini", 1_000_000, 1_000_000, 750_000},
		{"gpt-4.1", 1_000_000, 1_000_000, 10_000_000},
	}
	for _, tt := range tests {
		q, err := p.Quote(tt.model, tt.in, tt.out)
		if err != nil || !q.Priced || q.CostMicros != tt.want {
			t.Errorf("Quote(%q, %d, %d) = %+v, %v; want priced at %d", tt.model, tt.in, tt.out, q, err, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	p, err := ParsePrices([]byte(`{"version": "v1", "currency_code": "USD", "models": {
		"m":     {"input_micros_per_million": 1000000, "output_micros_per_million": 2000000},
		"cheap": {"input_micros_per_million": 3,       "output_micros_per_million": 0},
		"dear":  {"input_micros_per_million": 9223372036854775807, "output_micros_per_million": 9223372036854775807}}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		model   string
		in, out int64
		want    Quote
		wantErr string
	}{
		{"exact", "m", 1_000_000, 500_000, Quote{Priced: true, CostMicros: 2_000_000, Currency: "USD", Version: "v1"}, ""},
		{"one token rounds up", "m", 1, 0, Quote{Priced: true, CostMicros: 1, Currency: "USD", Version: "v1"}, ""},
		{"rounds once for the sum", "m", 1, 1, Quote{Priced: true, CostMicros: 3, Currency: "USD", Version: "v1"}, ""},
		{"fraction of a micro rounds up", "cheap", 1, 0, Quote{Priced: true, CostMicros: 1, Currency: "USD", Version: "v1"}, ""},
		{"just below a whole micro", "cheap", 333_333, 0, Quote{Priced: true, CostMicros: 1, Currency: "USD", Version: "v1"}, ""},
		{"just above a whole micro", "cheap", 333_334, 0, Quote{Priced: true, CostMicros: 2, Currency: "USD", Version: "v1"}, ""},
		{"no tokens is free but priced", "m", 0, 0, Quote{Priced: true, CostMicros: 0, Currency: "USD", Version: "v1"}, ""},
		{"large counts stay exact", "m", math.MaxInt64 / 4_000_000, 0, Quote{Priced: true, CostMicros: math.MaxInt64 / 4_000_000, Currency: "USD", Version: "v1"}, ""},
		{"unknown model is unpriced", "nope", 10, 10, Quote{Priced: false, CostMicros: 0, Currency: "USD", Version: "v1"}, ""},
		{"model names are exact", "M", 10, 10, Quote{Priced: false, Currency: "USD", Version: "v1"}, ""},
		{"negative input", "m", -1, 0, Quote{}, "input_tokens"},
		{"negative output", "nope", 0, -1, Quote{}, "output_tokens"},
		{"overflow", "dear", math.MaxInt64, math.MaxInt64, Quote{}, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := p.Quote(tt.model, tt.in, tt.out)
			if tt.wantErr != "" {
				var verr *ValidationError
				if !errors.As(err, &verr) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Quote(%q, %d, %d) = %v, want a ValidationError about %s", tt.model, tt.in, tt.out, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Quote(%q, %d, %d) = %v", tt.model, tt.in, tt.out, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Quote(%q, %d, %d) mismatch (-want +got):\n%s", tt.model, tt.in, tt.out, diff)
			}
		})
	}
}

func TestCeilCostMatchesBigArithmetic(t *testing.T) {
	t.Parallel()
	// Edge values around the 128-bit intermediate and the int64 result.
	vals := []uint64{0, 1, 999_999, 1_000_000, 1_000_001, 1 << 32, 1 << 62, math.MaxInt64}
	for _, a := range vals {
		for _, ra := range vals {
			for _, b := range []uint64{0, 1, 7} {
				got, ok := ceilCost(a, ra, b, 3)
				want, wantOK := bigCeil(a, ra, b, 3)
				if ok != wantOK || (ok && got != want) {
					t.Errorf("ceilCost(%d, %d, %d, 3) = %d, %v; want %d, %v", a, ra, b, got, ok, want, wantOK)
				}
			}
		}
	}
}

func TestParsePricesRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, want string
	}{
		{"not json", `{`, "parse price table"},
		{"no version", `{"currency_code": "USD", "models": {}}`, "no version"},
		{"bad currency", `{"version": "v", "currency_code": "usd", "models": {}}`, "ISO 4217"},
		{"negative rate", `{"version": "v", "currency_code": "USD", "models": {"m": {"input_micros_per_million": -1}}}`, "negative rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParsePrices([]byte(tt.doc)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParsePrices(%s) = %v, want an error mentioning %q", tt.doc, err, tt.want)
			}
		})
	}
}

func bigCeil(a, ra, b, rb uint64) (int64, bool) {
	x := new(big.Int).Mul(new(big.Int).SetUint64(a), new(big.Int).SetUint64(ra))
	x.Add(x, new(big.Int).Mul(new(big.Int).SetUint64(b), new(big.Int).SetUint64(rb)))
	x.Add(x, big.NewInt(999_999))
	x.Quo(x, big.NewInt(1_000_000))
	if !x.IsInt64() {
		return 0, false
	}
	return x.Int64(), true
}
