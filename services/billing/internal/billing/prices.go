package billing

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
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
type Rate struct {
	InputMicrosPerMillion  int64 `json:"input_micros_per_million"`
	OutputMicrosPerMillion int64 `json:"output_micros_per_million"`
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
// {name: {"input_micros_per_million", "output_micros_per_million"}}}.
func ParsePrices(b []byte) (*Prices, error) {
	var doc struct {
		Version  string          `json:"version"`
		Currency string          `json:"currency_code"`
		Models   map[string]Rate `json:"models"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse price table: %w", err)
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

// Quote prices inputTokens and outputTokens of model. The cost is
// ceil((input*inRate + output*outRate) / 1e6) micro-units, computed in
// 128-bit integer arithmetic: rounding up once per request, never down, so
// that a stream of tiny requests is never free. Negative token counts and
// costs beyond int64 are a ValidationError.
func (p *Prices) Quote(model string, inputTokens, outputTokens int64) (Quote, error) {
	if inputTokens < 0 {
		return Quote{}, &ValidationError{Field: "input_tokens", Reason: "must not be negative"}
	}
	if outputTokens < 0 {
		return Quote{}, &ValidationError{Field: "output_tokens", Reason: "must not be negative"}
	}
	q := Quote{Currency: p.currency, Version: p.version}
	r, ok := p.models[model]
	if !ok {
		return q, nil
	}
	// Token counts were checked above and rates by ParsePrices: all are
	// non-negative, so the conversions keep their values.
	cost, ok := ceilCost(uint64(inputTokens), uint64(r.InputMicrosPerMillion), uint64(outputTokens), uint64(r.OutputMicrosPerMillion)) //nolint:gosec // non-negative, see above
	if !ok {
		return Quote{}, &ValidationError{Field: "input_tokens", Reason: "token counts too large to price"}
	}
	q.Priced, q.CostMicros = true, cost
	return q, nil
}

// ceilCost returns ceil((a*ra + b*rb) / 1e6), or false when it does not fit
// in an int64.
func ceilCost(a, ra, b, rb uint64) (int64, bool) {
	const perMillion = 1_000_000
	hi1, lo1 := bits.Mul64(a, ra)
	hi2, lo2 := bits.Mul64(b, rb)
	lo, carry := bits.Add64(lo1, lo2, 0)
	hi, overflow := bits.Add64(hi1, hi2, carry)
	if overflow != 0 {
		return 0, false
	}
	lo, carry = bits.Add64(lo, perMillion-1, 0)
	hi, overflow = bits.Add64(hi, 0, carry)
	if overflow != 0 || hi >= perMillion {
		return 0, false
	}
	quo, _ := bits.Div64(hi, lo, perMillion)
	if quo > math.MaxInt64 {
		return 0, false
	}
	return int64(quo), true
}
