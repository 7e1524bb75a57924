package billing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"regexp"
)

// pricesJSON is the price table shipped in the binary. A price change is a
// new release with a new version string, so that every ledger entry names
// the exact table it was priced with and old entries are never re-priced.
//
//go:embed prices.json
var pricesJSON []byte

// Rate is a model's list price in micro-units of the table's currency per
// million tokens; integers, so that pricing never rounds through a float.
//
// The cache rates are optional because most tables list them only for
// some models. A missing one (absent or null) means the input rate: cache
// reads are then charged as uncached input, never for free, and writes no
// less than input. A cache rate that is present must be positive, so that
// a placeholder 0 cannot make cached input free.
type Rate struct {
	InputMicrosPerMillion  int64 `json:"input_micros_per_million"`
	OutputMicrosPerMillion int64 `json:"output_micros_per_million"`
	// CacheReadMicrosPerMillion prices input read from a prompt cache.
	CacheReadMicrosPerMillion *int64 `json:"cache_read_input_micros_per_million,omitempty"`
	// CacheWriteMicrosPerMillion prices input written to a prompt cache.
	CacheWriteMicrosPerMillion *int64 `json:"cache_write_input_micros_per_million,omitempty"`
}

// cacheRead and cacheWrite are the cache rates, the input rate when the
// table has none.
func (r Rate) cacheRead() int64 { return rateOr(r.CacheReadMicrosPerMillion, r.InputMicrosPerMillion) }
func (r Rate) cacheWrite() int64 {
	return rateOr(r.CacheWriteMicrosPerMillion, r.InputMicrosPerMillion)
}

func rateOr(rate *int64, fallback int64) int64 {
	if rate == nil {
		return fallback
	}
	return *rate
}

// Usage is the token counts of one request by kind, as the gateway's usage
// event reports them: InputTokens is the uncached input only, and
// ReasoningTokens is the part of OutputTokens spent on reasoning.
type Usage struct {
	InputTokens           int64
	CacheReadInputTokens  int64
	CacheWriteInputTokens int64
	OutputTokens          int64
	ReasoningTokens       int64
}

// Prices is a versioned price table keyed by upstream model name. It is
// immutable once built and safe for concurrent use.
type Prices struct {
	version  string
	currency string
	models   map[string]Rate
}

// Quote is the price of one request.
type Quote struct {
	// Priced is false when the table has no rate for the model; CostMicros
	// is then zero and the entry is flagged rather than silently free.
	Priced     bool
	CostMicros int64
	Currency   string
	Version    string
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// EmbeddedPrices returns the price table compiled into the binary.
func EmbeddedPrices() (*Prices, error) {
	return ParsePrices(pricesJSON)
}

// ParsePrices reads a price table: {"version", "currency_code", "models":
// {name: {"input_micros_per_million", "output_micros_per_million",
// "cache_read_input_micros_per_million"?, "cache_write_input_micros_per_million"?}}}.
// Unknown fields are refused: a misspelt rate would otherwise be ignored.
func ParsePrices(b []byte) (*Prices, error) {
	var doc struct {
		Version  string          `json:"version"`
		Currency string          `json:"currency_code"`
		Models   map[string]Rate `json:"models"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse price table: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse price table: data after the table")
	}
	var errs []error
	if doc.Version == "" {
		errs = append(errs, errors.New("price table has no version"))
	}
	if !currencyCode.MatchString(doc.Currency) {
		errs = append(errs, fmt.Errorf("price table currency %q is not an ISO 4217 code", doc.Currency))
	}
	for name, r := range doc.Models {
		if name == "" || r.InputMicrosPerMillion < 0 || r.OutputMicrosPerMillion < 0 {
			errs = append(errs, fmt.Errorf("price of model %q: empty name or negative rate", name))
		}
		for _, c := range []*int64{r.CacheReadMicrosPerMillion, r.CacheWriteMicrosPerMillion} {
			if c != nil && *c <= 0 {
				errs = append(errs, fmt.Errorf("price of model %q: a cache rate must be positive; leave it out to charge the input rate", name))
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Prices{version: doc.Version, currency: doc.Currency, models: doc.Models}, nil
}

// Version names the table; every ledger entry records it.
func (p *Prices) Version() string { return p.version }

// Currency is the ISO 4217 code of every rate in the table.
func (p *Prices) Currency() string { return p.currency }

// Quote prices u for model, each kind of token at its own rate:
//
//	ceil((input*in + cacheRead*cacheReadRate + cacheWrite*cacheWriteRate + output*out) / 1e6)
//
// micro-units, computed in 128-bit integer arithmetic and rounded up once
// per request, never down, so that a stream of tiny requests is never
// free. Reasoning tokens are part of the output and priced there, once.
// Negative counts, reasoning beyond the output and costs beyond int64 are
// a ValidationError.
func (p *Prices) Quote(model string, u Usage) (Quote, error) {
	counts := []struct {
		field string
		n     int64
	}{
		{"input_tokens", u.InputTokens},
		{"cache_read_input_tokens", u.CacheReadInputTokens},
		{"cache_write_input_tokens", u.CacheWriteInputTokens},
		{"output_tokens", u.OutputTokens},
		{"reasoning_tokens", u.ReasoningTokens},
	}
	for _, c := range counts {
		if c.n < 0 {
			return Quote{}, &ValidationError{Field: c.field, Reason: "must not be negative"}
		}
	}
	if u.ReasoningTokens > u.OutputTokens {
		return Quote{}, &ValidationError{Field: "reasoning_tokens", Reason: "must not exceed output_tokens, which include them"}
	}
	q := Quote{Currency: p.currency, Version: p.version}
	r, ok := p.models[model]
	if !ok {
		return q, nil
	}
	cost, ok := ceilCost(
		term{nonNegative(u.InputTokens), nonNegative(r.InputMicrosPerMillion)},
		term{nonNegative(u.CacheReadInputTokens), nonNegative(r.cacheRead())},
		term{nonNegative(u.CacheWriteInputTokens), nonNegative(r.cacheWrite())},
		term{nonNegative(u.OutputTokens), nonNegative(r.OutputMicrosPerMillion)},
	)
	if !ok {
		return Quote{}, &ValidationError{Field: "input_tokens", Reason: "token counts too large to price"}
	}
	q.Priced, q.CostMicros = true, cost
	return q, nil
}

// nonNegative converts a token count or a rate. Quote checked the counts
// and ParsePrices the rates: none is negative, so the value is kept.
func nonNegative(n int64) uint64 {
	return uint64(n) //nolint:gosec // never negative, see above
}

// term is a token count and its rate per million.
type term struct{ tokens, rate uint64 }

// ceilCost returns ceil(sum(tokens*rate) / 1e6), or false when it does not
// fit in an int64.
func ceilCost(terms ...term) (int64, bool) {
	const perMillion = 1_000_000
	var hi, lo uint64
	for _, t := range terms {
		phi, plo := bits.Mul64(t.tokens, t.rate)
		var carry, overflow uint64
		lo, carry = bits.Add64(lo, plo, 0)
		hi, overflow = bits.Add64(hi, phi, carry)
		if overflow != 0 {
			return 0, false
		}
	}
	lo, carry := bits.Add64(lo, perMillion-1, 0)
	hi, overflow := bits.Add64(hi, 0, carry)
	if overflow != 0 || hi >= perMillion {
		return 0, false
	}
	quo, _ := bits.Div64(hi, lo, perMillion)
	if quo > math.MaxInt64 {
		return 0, false
	}
	return int64(quo), true
}
