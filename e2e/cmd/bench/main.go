// Command bench measures the latency the gateway adds, its CPU time per
// request, the whole platform's, and the gateway's memory, following
// docs PERFORMANCE.md: the same requests are sent through the gateway and
// straight to the mock provider in one run, one at a time in interleaved
// rounds (on the native path, an OpenAI client on an OpenAI-compatible
// provider, and on the translated one, the same client on a provider
// speaking Anthropic's Messages API), then at fixed open-loop rates, then
// closed-loop to saturation, plus streaming time-to-first-byte and a point
// with a slow upstream. Above saturation it reports what was served and
// shed and whether the gateway recovered. It writes raw results as JSON
// lines and markdown tables. scripts/bench.sh starts the platform and pins
// the processes to cores before it runs this.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type config struct {
	gatewayURL, gatewayKey string // e.g. http://127.0.0.1:8080/v1
	directURL, directKey   string // the mock provider, e.g. http://127.0.0.1:8090/v1
	slowGatewayModel       string // a route to a mock with a 50 ms delay ("" to skip)
	slowDirectURL          string
	model, upstreamModel   string
	translatedModel        string // a route to the mock in Anthropic's format ("" to skip)
	maxTokens              int    // max_tokens of the direct Anthropic request
	gatewayPID             int
	mockPID                int // the mock provider the direct steps call: a bare net/http server's CPU per request, the reference
	platform               platform
	out                    string
	step, warmup           time.Duration
	drainMax               time.Duration // the longest wait for the platform to be idle after a step
	idleCeiling            time.Duration // the platform's CPU per second when idle, plus a margin
	maxDuration            time.Duration
	rounds, perRound       int
	rates                  []int
	overloadRate           int // open-loop steps at or above it get the overload verdict
	satWorkers             int
	features, note         string
	pprofURL               string // the gateway's pprof base URL, to profile the 1000 req/s steps
	dir                    string // this run's output folder
}

func main() {
	var c config
	var rates, pids string
	flag.StringVar(&c.gatewayURL, "gateway", "", "the gateway's OpenAI base URL")
	flag.StringVar(&c.gatewayKey, "gateway-key", os.Getenv("MOAT_API_KEY"), "a project API key")
	flag.StringVar(&c.directURL, "direct", "", "the mock provider's base URL")
	flag.StringVar(&c.directKey, "direct-key", os.Getenv("MOCK_PROVIDER_CREDENTIAL"), "the mock provider's credential")
	flag.StringVar(&c.model, "model", "demo-model", "the logical model of the native path (gateway)")
	flag.StringVar(&c.upstreamModel, "upstream-model", "mock-model", "the upstream model (direct)")
	flag.StringVar(&c.translatedModel, "translated-model", "demo-claude", "the logical model of the translated path: a route to the mock as an Anthropic provider (\"\" to skip)")
	// The gateway's default when an OpenAI client names no max_tokens
	// (services/gateway/internal/wire/anthropic.DefaultMaxTokens).
	flag.IntVar(&c.maxTokens, "translated-max-tokens", 8192, "max_tokens of the direct Anthropic request")
	flag.StringVar(&c.slowGatewayModel, "slow-model", "", "a gateway model routed to a 50 ms mock")
	flag.StringVar(&c.slowDirectURL, "slow-direct", "", "that 50 ms mock's base URL")
	flag.IntVar(&c.gatewayPID, "gateway-pid", 0, "the gateway's pid, for CPU time and RSS")
	flag.IntVar(&c.mockPID, "mock-pid", 0, "the mock provider's pid: its CPU time per request on the direct steps, the cost of one bare net/http server hop")
	flag.StringVar(&pids, "pids", "", "the other platform processes whose CPU time counts, name=pid,... (nats, billing, audit, identity, config)")
	flag.IntVar(&c.platform.postgresPID, "postgres-pid", 0, "the PostgreSQL postmaster's pid: its CPU time, its children's and its reaped children's count")
	flag.StringVar(&c.out, "out", ".bench", "the output folder")
	flag.DurationVar(&c.step, "step", 20*time.Second, "duration of each fixed-rate step")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "warm-up before each step")
	flag.DurationVar(&c.drainMax, "drain-max", 0, "the longest wait for the platform to be idle after a gateway step (0: three steps, within 10s..30s)")
	flag.DurationVar(&c.maxDuration, "max-duration", 12*time.Minute, "the whole run's bound")
	flag.IntVar(&c.rounds, "rounds", 10, "interleaved rounds at concurrency 1")
	flag.IntVar(&c.perRound, "per-round", 200, "requests per round and target at concurrency 1")
	flag.StringVar(&rates, "rates", "100,500,1000,3000", "fixed rates, requests per second")
	flag.IntVar(&c.overloadRate, "overload-rate", 3000, "fixed rates at or above this are overload steps: served, shed, recovery and outcome")
	flag.IntVar(&c.satWorkers, "sat-workers", 64, "connections of the closed-loop saturation run")
	flag.StringVar(&c.features, "features", "", "the governance features on in the measured gateway, for the report")
	flag.StringVar(&c.note, "note", "", "a remark on the run's conditions, for the report")
	flag.StringVar(&c.pprofURL, "pprof", "", "the gateway's pprof base URL (http://host:port); profiles the 1000 req/s steps")
	flag.Parse()
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: bad rate %q\n", r)
			os.Exit(2)
		}
		c.rates = append(c.rates, n)
	}
	var err error
	if c.platform.pids, err = parsePIDs(pids); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -pids: %v\n", err)
		os.Exit(2)
	}
	if c.gatewayPID > 0 {
		c.platform.pids["gateway"] = c.gatewayPID
	}
	if c.drainMax == 0 {
		c.drainMax = min(max(3*c.step, 10*time.Second), 30*time.Second)
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// parsePIDs reads name=pid,... with names among components.
func parsePIDs(s string) (map[string]int, error) {
	out := map[string]int{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		pid, err := strconv.Atoi(v)
		switch {
		case !ok || err != nil || pid <= 0:
			return nil, fmt.Errorf("want name=pid, got %q", kv)
		case name == "gateway" || name == "postgres":
			return nil, fmt.Errorf("%s has its own flag", name)
		case !isComponent(name):
			return nil, fmt.Errorf("unknown component %q (want one of %s)", name, strings.Join(components, ", "))
		}
		out[name] = pid
	}
	return out, nil
}

func isComponent(name string) bool {
	for _, c := range components {
		if c == name {
			return true
		}
	}
	return false
}

// result is one JSON line of raw output.
type result struct {
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`         // gateway | direct
	Path        string  `json:"path,omitempty"` // native | translated, one at a time
	Rate        int     `json:"rate,omitempty"`
	Requests    uint64  `json:"requests"`
	Success     float64 `json:"success"`
	Throughput  float64 `json:"throughput_rps"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	CPUPerReqUs float64 `json:"gateway_cpu_us_per_request,omitempty"`
	// MockCPUPerReqUs, on a direct step, is the mock's CPU time per request:
	// what one net/http server costs here to read a request and write its
	// answer on the loopback. The gateway is a server and a client.
	MockCPUPerReqUs float64        `json:"mock_cpu_us_per_request,omitempty"`
	RSSMB           float64        `json:"gateway_peak_rss_mb,omitempty"`      // VmHWM, the peak since start
	StepRSSMB       float64        `json:"gateway_step_peak_rss_mb,omitempty"` // the peak VmRSS sampled during the step
	Platform        *platformCPU   `json:"platform_cpu,omitempty"`
	Load            *loadStats     `json:"load,omitempty"`
	StatusCodes     map[string]int `json:"status_codes,omitempty"`
	Errors          []string       `json:"errors,omitempty"`
}

// platformCPU is the CPU time the platform's processes spent, per request.
type platformCPU struct {
	// UsPerRequest is each component's CPU time during the step over the
	// step's requests, in µs; TotalUs their sum.
	UsPerRequest map[string]float64 `json:"us_per_request"`
	TotalUs      float64            `json:"total_us_per_request"`
	// WithBacklogUs counts from the start of the warm-up to the end of the
	// drain after the step, over the requests of both: work done after
	// the step (events ingested late) included.
	WithBacklogUs          float64            `json:"with_backlog_total_us_per_request"`
	WithBacklogByComponent map[string]float64 `json:"with_backlog_us_per_request"`
	DrainS                 float64            `json:"drain_s"`
	Drained                bool               `json:"drained"` // idle again within -drain-max
}

// loadStats is what a step against the gateway got back.
type loadStats struct {
	OfferedRPS            float64 `json:"offered_rps"`
	ServedPerS            float64 `json:"served_2xx_per_s"`
	ShedPerS              float64 `json:"shed_503_per_s"`
	OtherPerS             float64 `json:"other_errors_per_s"`
	Served                uint64  `json:"served_2xx"`
	Shed                  uint64  `json:"shed_503"`
	Other                 uint64  `json:"other_errors"`
	ShedWithoutRetryAfter uint64  `json:"shed_without_retry_after"`
	ShedNotClientFormat   uint64  `json:"shed_not_openai_error"`
	// ShedMessages counts the 503 answers by error message: the gate that
	// shed them (calls in flight, or the usage-event queue).
	ShedMessages map[string]uint64 `json:"shed_503_messages,omitempty"`
	OKP50ms      float64           `json:"served_p50_ms"`
	OKP99ms      float64           `json:"served_p99_ms"`
	Recovery     *recovery         `json:"recovery,omitempty"`
	Outcome      string            `json:"outcome,omitempty"`
	Why          string            `json:"outcome_why,omitempty"`
}

// recovery is the check after an overload step.
type recovery struct {
	WaitS       float64 `json:"wait_s"`
	Requests    int     `json:"requests"`
	OK          int     `json:"ok_200"`
	P50ms       float64 `json:"p50_ms"`
	MaxMs       float64 `json:"max_ms"`
	C1P50ms     float64 `json:"one_at_a_time_p50_ms"`
	DirectP50ms float64 `json:"direct_p50_ms"`
	Recovered   bool    `json:"recovered"`
}

// summary is the last JSON line: the run's conditions and ratios.
type summary struct {
	Scenario          string  `json:"scenario"` // "summary"
	IdleCPUMsPerS     float64 `json:"idle_platform_cpu_ms_per_s"`
	CPURatio          float64 `json:"translated_native_gateway_cpu_ratio,omitempty"`
	CPURatioStream    float64 `json:"translated_native_gateway_cpu_ratio_stream,omitempty"`
	GatewayPeakRSSMB  float64 `json:"gateway_peak_rss_mb"`
	GatewayGOMAXPROCS string  `json:"gateway_gomaxprocs"`
	Features          string  `json:"features"`
	Note              string  `json:"note,omitempty"`
	ElapsedS          float64 `json:"elapsed_s"`
}

// path is a client API served through a route, and the same request sent
// straight to the mock in the provider's format.
type path struct {
	name, suffix string // native, ""; translated, "-translated"
	gw, direct   target
}

func run(ctx context.Context, c config) (err error) {
	if c.gatewayURL == "" || c.directURL == "" || c.gatewayKey == "" {
		return errors.New("-gateway, -gateway-key and -direct are required")
	}
	began := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, c.maxDuration, fmt.Errorf("the run took longer than -max-duration %s", c.maxDuration))
	defer cancel()
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, context.Cause(ctx))
		}
	}()
	stamp := time.Now().UTC().Format("20060102T150405Z")
	dir := filepath.Join(c.out, stamp)
	c.dir = dir
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	raw, err := os.Create(filepath.Join(dir, "results.jsonl")) //nolint:gosec // the output folder is the operator's choice
	if err != nil {
		return err
	}
	defer raw.Close()
	enc := json.NewEncoder(raw)
	var all []result
	var writeErr error
	write := func(v any) {
		if err := enc.Encode(v); err != nil && writeErr == nil {
			writeErr = fmt.Errorf("write results.jsonl: %w", err)
		}
	}
	emit := func(r result) {
		all = append(all, r)
		write(r)
		line := fmt.Sprintf("%-28s %-8s rate=%-5d n=%-6d ok=%5.1f%% p50=%8.3fms p99=%8.3fms cpu/req=%6.1fµs",
			r.Scenario, r.Target, r.Rate, r.Requests, r.Success*100, r.P50ms, r.P99ms, r.CPUPerReqUs)
		if r.MockCPUPerReqUs > 0 {
			line += fmt.Sprintf(" mock cpu/req=%6.1fµs", r.MockCPUPerReqUs)
		}
		if r.Platform != nil {
			line += fmt.Sprintf(" platform=%6.1fµs (with backlog %6.1fµs, drain %.1fs)", r.Platform.TotalUs, r.Platform.WithBacklogUs, r.Platform.DrainS)
		}
		fmt.Fprintln(os.Stderr, line)
	}
	paths := []path{{name: "native", gw: openAITarget("gateway", c.gatewayURL, c.gatewayKey, c.model),
		direct: openAITarget("direct", c.directURL, c.directKey, c.upstreamModel)}}
	if c.translatedModel != "" {
		paths = append(paths, path{name: "translated", suffix: "-translated",
			gw:     openAITarget("gateway", c.gatewayURL, c.gatewayKey, c.translatedModel),
			direct: anthropicTarget("direct", c.directURL, c.directKey, c.upstreamModel, c.maxTokens)})
	}
	fmt.Fprintf(os.Stderr, "bench: %s\n", estimate(c, len(paths)))
	load1, _ := os.ReadFile("/proc/loadavg")

	// The platform at rest, before any request: what a drain waits for.
	idle, err := idleRate(ctx, c.platform, 2*time.Second)
	if err != nil {
		return err
	}
	c.idleCeiling = idle + max(20*time.Millisecond, idle/2)

	// 1. One request at a time, every path's gateway and direct interleaved in rounds.
	c1P50 := map[string]float64{}
	cpuPerReq := map[string]map[bool]float64{}
	for _, stream := range []bool{false, true} {
		type acc struct {
			gw, direct []timing
			cpu        time.Duration
		}
		accs := make([]acc, len(paths))
		for range c.rounds {
			for i, p := range paths {
				for _, t := range []target{p.gw, p.direct} {
					before := threadsCPU(c.gatewayPID)
					ts, err := sequential(ctx, t, c.perRound, stream)
					if err != nil {
						return fmt.Errorf("one at a time, %s path, %s (stream %t): %w", p.name, t.name, stream, err)
					}
					if t.name == "gateway" {
						accs[i].cpu += threadsCPU(c.gatewayPID) - before
						accs[i].gw = append(accs[i].gw, ts...)
					} else {
						accs[i].direct = append(accs[i].direct, ts...)
					}
				}
			}
		}
		for i, p := range paths {
			a := accs[i]
			var cpu float64
			if c.gatewayPID > 0 && len(a.gw) > 0 {
				cpu = us(a.cpu) / float64(len(a.gw))
			}
			if cpuPerReq[p.name] == nil {
				cpuPerReq[p.name] = map[bool]float64{}
			}
			cpuPerReq[p.name][stream] = cpu
			type row struct {
				scenario string
				first    bool
			}
			rows := []row{{"c1" + p.suffix, false}}
			if stream {
				rows = []row{{"c1" + p.suffix + "-stream-ttfb", true}, {"c1" + p.suffix + "-stream-total", false}}
			}
			for _, rw := range rows {
				g := fromTimings(rw.scenario, "gateway", a.gw, rw.first)
				g.Path, g.CPUPerReqUs = p.name, cpu
				emit(g)
				d := fromTimings(rw.scenario, "direct", a.direct, rw.first)
				d.Path = p.name
				emit(d)
				if !stream {
					c1P50[p.name] = g.P50ms
				}
			}
		}
	}

	// gatewayStep completes a gateway step: the overload checks at high
	// rates, then the CPU spent on its backlog.
	gatewayStep := func(st step, p path, rate int) (result, error) {
		var extra uint64
		if rate >= c.overloadRate && st.Load != nil {
			const probeN = 50
			rec, err := probe(ctx, c, p.gw, p.direct, 2*time.Second, probeN, c1P50[p.name])
			if err != nil {
				return result{}, err
			}
			st.Load.Recovery, extra = rec, probeN
			st.Load.Outcome, st.Load.Why = outcome(st.result, c1P50[p.name])
		}
		withBacklog(ctx, c, &st, extra)
		st.Rate = rate
		return st.result, ctx.Err()
	}

	// 2. Fixed open-loop rates, gateway then direct at each rate; the
	// translated path too at 1000 req/s.
	for _, rate := range c.rates {
		steps := paths[:1]
		if rate == 1000 {
			steps = paths
		}
		for _, p := range steps {
			scenario := fmt.Sprintf("rate-%d%s", rate, p.suffix)
			pacer := vegeta.Rate{Freq: rate, Per: time.Second}
			st, err := attack(ctx, c, p.gw, scenario, pacer, c.step)
			if err != nil {
				return err
			}
			r, err := gatewayStep(st, p, rate)
			if err != nil {
				return err
			}
			emit(r)
			st, err = attack(ctx, c, p.direct, scenario, pacer, c.step)
			if err != nil {
				return err
			}
			st.Rate = rate
			emit(st.result)
		}
	}

	// 3. A slow upstream (50 ms) at 100 requests/s.
	if c.slowGatewayModel != "" && c.slowDirectURL != "" {
		slow := path{name: "native", gw: openAITarget("gateway", c.gatewayURL, c.gatewayKey, c.slowGatewayModel),
			direct: openAITarget("direct", c.slowDirectURL, c.directKey, c.upstreamModel)}
		pacer := vegeta.Rate{Freq: 100, Per: time.Second}
		st, err := attack(ctx, c, slow.gw, "upstream-50ms", pacer, c.step)
		if err != nil {
			return err
		}
		r, err := gatewayStep(st, slow, 100)
		if err != nil {
			return err
		}
		emit(r)
		if st, err = attack(ctx, c, slow.direct, "upstream-50ms", pacer, c.step); err != nil {
			return err
		}
		st.Rate = 100
		emit(st.result)
	}

	// 4. Closed loop: a fixed number of connections as fast as they go.
	for _, t := range []target{paths[0].gw, paths[0].direct} {
		st, err := attack(ctx, c, t, "saturation", vegeta.ConstantPacer{}, c.step)
		if err != nil {
			return err
		}
		if t.name == "gateway" {
			withBacklog(ctx, c, &st, 0)
			st.RSSMB = rssMB(c.gatewayPID, "VmHWM")
		}
		emit(st.result)
	}

	sum := summary{Scenario: "summary", IdleCPUMsPerS: float64(idle.Microseconds()) / 1000,
		GatewayPeakRSSMB: rssMB(c.gatewayPID, "VmHWM"), GatewayGOMAXPROCS: os.Getenv("BENCH_GATEWAY_GOMAXPROCS"),
		Features: c.features, Note: c.note}
	if n, t := cpuPerReq["native"], cpuPerReq["translated"]; n != nil && t != nil {
		if n[false] > 0 {
			sum.CPURatio = t[false] / n[false]
		}
		if n[true] > 0 {
			sum.CPURatioStream = t[true] / n[true]
		}
	}
	sum.ElapsedS = time.Since(began).Seconds()
	write(sum)
	if writeErr != nil {
		return writeErr
	}
	load2, _ := os.ReadFile("/proc/loadavg")
	md := report(c, all, sum, strings.TrimSpace(string(load1)), strings.TrimSpace(string(load2)))
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o600); err != nil {
		return err
	}
	fmt.Println(md)
	fmt.Fprintf(os.Stderr, "results: %s (%.0f s)\n", dir, sum.ElapsedS)
	return nil
}

// idleRate is the platform's CPU time per second at rest, measured over d.
func idleRate(ctx context.Context, p platform, d time.Duration) (time.Duration, error) {
	before := p.read().total()
	select {
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	case <-time.After(d):
	}
	return time.Duration(float64(p.read().total()-before) / d.Seconds()), nil
}

// estimate says how long the run should take.
func estimate(c config, paths int) string {
	gatewaySteps := len(c.rates) + 1 // + saturation
	for _, r := range c.rates {
		if r == 1000 && paths > 1 {
			gatewaySteps++
		}
	}
	if c.slowGatewayModel != "" && c.slowDirectURL != "" {
		gatewaySteps++
	}
	// One at a time: about a millisecond a request.
	c1 := time.Duration(c.rounds*paths*2*2*c.perRound) * time.Millisecond
	steps := time.Duration(2*gatewaySteps) * (c.warmup + c.step)
	typical := c1 + steps + time.Duration(gatewaySteps)*2*time.Second
	worst := c1 + steps + time.Duration(gatewaySteps)*(c.drainMax+3*time.Second)
	return fmt.Sprintf("%d steps of %s after a %s warm-up; about %s, at most %s if no drain ends early (bound %s)",
		2*gatewaySteps, c.step, c.warmup, typical.Round(time.Second), worst.Round(time.Second), c.maxDuration)
}

func fromTimings(scenario, target string, ts []timing, first bool) result {
	ds := make([]time.Duration, len(ts))
	for i, t := range ts {
		ds[i] = t.total
		if first {
			ds[i] = t.first
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return ms(ds[min(len(ds)-1, int(p*float64(len(ds))))])
	}
	return result{Scenario: scenario, Target: target, Requests: uint64(len(ds)), Success: 1,
		P50ms: q(0.50), P90ms: q(0.90), P99ms: q(0.99), MaxMs: q(1)}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
