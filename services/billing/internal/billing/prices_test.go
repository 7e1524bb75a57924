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
		q, err := p.Quote(tt.model, Usage{InputTokens: tt.in, OutputTokens: tt.out})
		if err != nil || !q.Priced || q.CostMicros != tt.want {
			t.Errorf("Quote(%q, %d, %d) = %+v, %v; want priced at %d", tt.model, tt.in, tt.out, q, err, tt.want)
		}
	}
	// Cached input at the published cached-input price where the table has
	// one, at the input price where it has none (the mock).
	cached := []struct {
		model string
		want  int64
	}{
		{"gpt-5", 125_000},
		{"gpt-4o", 1_250_000},
		{"o4-mini", 275_000},
		{"mock-model", 1_000_000},
		{"gpt-3.5-turbo", 500_000},
	}
	for _, tt := range cached {
		q, err := p.Quote(tt.model, Usage{CacheReadInputTokens: 1_000_000})
		if err != nil || !q.Priced || q.CostMicros != tt.want {
			t.Errorf("Quote(%q, a million cached input tokens) = %+v, %v; want priced at %d", tt.model, q, err, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	p, err := ParsePrices([]byte(`{"version": "v1", "currency_code": "USD", "models": {
		"m":      {"input_micros_per_million": 1000000, "output_micros_per_million": 2000000},
		"cached": {"input_micros_per_million": 3000000, "output_micros_per_million": 15000000,
		           "cache_read_input_micros_per_million": 300000, "cache_write_input_micros_per_million": 3750000},
		"reads":  {"input_micros_per_million": 2000000, "output_micros_per_million": 8000000,
		           "cache_read_input_micros_per_million": 500000, "cache_write_input_micros_per_million": null},
		"cheap":  {"input_micros_per_million": 3,       "output_micros_per_million": 0},
		"dear":   {"input_micros_per_million": 9223372036854775807, "output_micros_per_million": 9223372036854775807}}}`))
	if err != nil {
		t.Fatal(err)
	}
	priced := func(cost int64) Quote { return Quote{Priced: true, CostMicros: cost, Currency: "USD", Version: "v1"} }
	tests := []struct {
		name    string
		model   string
		u       Usage
		want    Quote
		wantErr string
	}{
		{"exact", "m", Usage{InputTokens: 1_000_000, OutputTokens: 500_000}, priced(2_000_000), ""},
		{"one token rounds up", "m", Usage{InputTokens: 1}, priced(1), ""},
		{"rounds once for the sum", "m", Usage{InputTokens: 1, OutputTokens: 1}, priced(3), ""},
		{"fraction of a micro rounds up", "cheap", Usage{InputTokens: 1}, priced(1), ""},
		{"just below a whole micro", "cheap", Usage{InputTokens: 333_333}, priced(1), ""},
		{"just above a whole micro", "cheap", Usage{InputTokens: 333_334}, priced(2), ""},
		{"no tokens is free but priced", "m", Usage{}, priced(0), ""},
		{"large counts stay exact", "m", Usage{InputTokens: math.MaxInt64 / 4_000_000}, priced(math.MaxInt64 / 4_000_000), ""},
		{"unknown model is unpriced", "nope", Usage{InputTokens: 10, OutputTokens: 10}, Quote{Priced: false, CostMicros: 0, Currency: "USD", Version: "v1"}, ""},
		{"model names are exact", "M", Usage{InputTokens: 10, OutputTokens: 10}, Quote{Priced: false, Currency: "USD", Version: "v1"}, ""},

		// Each kind at its own rate: a million of each, one kind at a time,
		// then all at once (0.3 + 3.75 + 3 + 15 USD).
		{"cache reads at the cache-read rate", "cached", Usage{CacheReadInputTokens: 1_000_000}, priced(300_000), ""},
		{"cache writes at the cache-write rate", "cached", Usage{CacheWriteInputTokens: 1_000_000}, priced(3_750_000), ""},
		{"uncached input at the input rate", "cached", Usage{InputTokens: 1_000_000}, priced(3_000_000), ""},
		{"output at the output rate", "cached", Usage{OutputTokens: 1_000_000}, priced(15_000_000), ""},
		{"reasoning is output, charged once", "cached", Usage{OutputTokens: 1_000_000, ReasoningTokens: 600_000}, priced(15_000_000), ""},
		{"every kind", "cached", Usage{InputTokens: 1_000_000, CacheReadInputTokens: 1_000_000, CacheWriteInputTokens: 1_000_000,
			OutputTokens: 1_000_000, ReasoningTokens: 1_000_000}, priced(22_050_000), ""},
		{"every kind rounds once", "cached", Usage{InputTokens: 1, CacheReadInputTokens: 1, CacheWriteInputTokens: 1, OutputTokens: 1}, priced(23), ""},

		// A missing cache rate is the input rate, never free.
		{"no cache rates: reads at the input rate", "m", Usage{CacheReadInputTokens: 1_000_000}, priced(1_000_000), ""},
		{"no cache rates: writes at the input rate", "m", Usage{CacheWriteInputTokens: 1_000_000}, priced(1_000_000), ""},
		{"null cache-write rate: the input rate", "reads", Usage{CacheReadInputTokens: 1_000_000, CacheWriteInputTokens: 1_000_000}, priced(2_500_000), ""},
		{"old-style usage prices as before", "cached", Usage{InputTokens: 1000, OutputTokens: 500}, priced(10_500), ""},

		{"negative input", "m", Usage{InputTokens: -1}, Quote{}, "input_tokens"},
		{"negative output", "nope", Usage{OutputTokens: -1}, Quote{}, "output_tokens"},
		{"negative cache read", "m", Usage{CacheReadInputTokens: -1}, Quote{}, "cache_read_input_tokens"},
		{"negative cache write", "nope", Usage{CacheWriteInputTokens: -1}, Quote{}, "cache_write_input_tokens"},
		{"negative reasoning", "m", Usage{ReasoningTokens: -1}, Quote{}, "reasoning_tokens"},
		{"reasoning beyond the output", "m", Usage{OutputTokens: 10, ReasoningTokens: 11}, Quote{}, "must not exceed output_tokens"},
		{"overflow", "dear", Usage{InputTokens: math.MaxInt64, OutputTokens: math.MaxInt64}, Quote{}, "too large"},
		{"overflow across kinds", "dear", Usage{InputTokens: math.MaxInt64, CacheReadInputTokens: math.MaxInt64,
			CacheWriteInputTokens: math.MaxInt64, OutputTokens: math.MaxInt64}, Quote{}, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := p.Quote(tt.model, tt.u)
			if tt.wantErr != "" {
				var verr *ValidationError
				if !errors.As(err, &verr) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Quote(%q, %+v) = %v, want a ValidationError about %s", tt.model, tt.u, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Quote(%q, %+v) = %v", tt.model, tt.u, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Quote(%q, %+v) mismatch (-want +got):\n%s", tt.model, tt.u, diff)
			}
		})
	}
}

func TestCeilCostMatchesBigArithmetic(t *testing.T) {
	t.Parallel()
	// Edge values around the 128-bit intermediate and the int64 result,
	// with two terms and with four (the sum itself may overflow 128 bits).
	vals := []uint64{0, 1, 999_999, 1_000_000, 1_000_001, 1 << 32, 1 << 62, math.MaxInt64, math.MaxUint64}
	for _, a := range vals {
		for _, ra := range vals {
			for _, b := range []uint64{0, 1, 7} {
				terms := [][]term{
					{{a, ra}, {b, 3}},
					{{a, ra}, {b, 3}, {ra, a}, {a, ra}},
				}
				for _, ts := range terms {
					got, ok := ceilCost(ts...)
					want, wantOK := bigCeil(ts)
					if ok != wantOK || (ok && got != want) {
						t.Errorf("ceilCost(%v) = %d, %v; want %d, %v", ts, got, ok, want, wantOK)
					}
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
		{"zero cache-read rate", `{"version": "v", "currency_code": "USD", "models": {"m": {"input_micros_per_million": 1, "cache_read_input_micros_per_million": 0}}}`, "cache rate must be positive"},
		{"negative cache-write rate", `{"version": "v", "currency_code": "USD", "models": {"m": {"input_micros_per_million": 1, "cache_write_input_micros_per_million": -5}}}`, "cache rate must be positive"},
		{"misspelt rate", `{"version": "v", "currency_code": "USD", "models": {"m": {"input_micros_per_million": 1, "cached_input_micros_per_million": 1}}}`, "unknown field"},
		{"data after the table", `{"version": "v", "currency_code": "USD", "models": {}} {}`, "after the table"},
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

func bigCeil(terms []term) (int64, bool) {
	x := new(big.Int)
	for _, t := range terms {
		x.Add(x, new(big.Int).Mul(new(big.Int).SetUint64(t.tokens), new(big.Int).SetUint64(t.rate)))
	}
	x.Add(x, big.NewInt(999_999))
	x.Quo(x, big.NewInt(1_000_000))
	if !x.IsInt64() {
		return 0, false
	}
	return x.Int64(), true
}
