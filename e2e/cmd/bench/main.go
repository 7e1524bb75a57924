// Command bench measures the latency the gateway adds, its CPU time per
// request and its memory, following docs PERFORMANCE.md: the same requests
// are sent through the gateway and straight to the mock provider in one
// run, one at a time in interleaved rounds, then at fixed open-loop rates,
// then closed-loop to saturation, plus streaming time-to-first-byte and a
// point with a slow upstream. It writes raw results as JSON lines and a
// markdown table. scripts/bench.sh starts the platform and pins the
// processes to cores before it runs this.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
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
	gatewayPID             int
	out                    string
	step, warmup           time.Duration
	rounds, perRound       int
	rates                  []int
	satWorkers             int
	features               string
	pprofURL               string // the gateway's pprof base URL, to profile the 1000 req/s step
	dir                    string // this run's output folder
}

func main() {
	var c config
	var rates string
	flag.StringVar(&c.gatewayURL, "gateway", "", "the gateway's OpenAI base URL")
	flag.StringVar(&c.gatewayKey, "gateway-key", os.Getenv("MOAT_API_KEY"), "a project API key")
	flag.StringVar(&c.directURL, "direct", "", "the mock provider's base URL")
	flag.StringVar(&c.directKey, "direct-key", os.Getenv("MOCK_PROVIDER_CREDENTIAL"), "the mock provider's credential")
	flag.StringVar(&c.model, "model", "demo-model", "the logical model (gateway)")
	flag.StringVar(&c.upstreamModel, "upstream-model", "mock-model", "the upstream model (direct)")
	flag.StringVar(&c.slowGatewayModel, "slow-model", "", "a gateway model routed to a 50 ms mock")
	flag.StringVar(&c.slowDirectURL, "slow-direct", "", "that 50 ms mock's base URL")
	flag.IntVar(&c.gatewayPID, "gateway-pid", 0, "the gateway's pid, for CPU time and peak RSS")
	flag.StringVar(&c.out, "out", ".bench", "the output folder")
	flag.DurationVar(&c.step, "step", 20*time.Second, "duration of each fixed-rate step")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "warm-up before each step")
	flag.IntVar(&c.rounds, "rounds", 10, "interleaved rounds at concurrency 1")
	flag.IntVar(&c.perRound, "per-round", 200, "requests per round and target at concurrency 1")
	flag.StringVar(&rates, "rates", "100,500,1000,3000", "fixed rates, requests per second")
	flag.IntVar(&c.satWorkers, "sat-workers", 64, "connections of the closed-loop saturation run")
	flag.StringVar(&c.features, "features", "", "the governance features on in the measured gateway, for the report")
	flag.StringVar(&c.pprofURL, "pprof", "", "the gateway's pprof base URL (http://host:port); profiles the 1000 req/s step")
	flag.Parse()
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: bad rate %q\n", r)
			os.Exit(2)
		}
		c.rates = append(c.rates, n)
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// result is one JSON line of raw output.
type result struct {
	Scenario    string   `json:"scenario"`
	Target      string   `json:"target"` // gateway | direct
	Rate        int      `json:"rate,omitempty"`
	Requests    uint64   `json:"requests"`
	Success     float64  `json:"success"`
	Throughput  float64  `json:"throughput_rps"`
	P50ms       float64  `json:"p50_ms"`
	P90ms       float64  `json:"p90_ms"`
	P99ms       float64  `json:"p99_ms"`
	MaxMs       float64  `json:"max_ms"`
	CPUPerReqUs float64  `json:"gateway_cpu_us_per_request,omitempty"`
	RSSMB       float64  `json:"gateway_peak_rss_mb,omitempty"`
	Errors      []string `json:"errors,omitempty"`
}

func run(ctx context.Context, c config) error {
	if c.gatewayURL == "" || c.directURL == "" || c.gatewayKey == "" {
		return errors.New("-gateway, -gateway-key and -direct are required")
	}
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
	emit := func(r result) {
		all = append(all, r)
		if err := enc.Encode(r); err != nil && writeErr == nil {
			writeErr = fmt.Errorf("write results.jsonl: %w", err)
		}
		fmt.Fprintf(os.Stderr, "%-22s %-8s rate=%-5d n=%-6d ok=%5.1f%% p50=%7.3fms p99=%7.3fms cpu/req=%6.1fµs\n",
			r.Scenario, r.Target, r.Rate, r.Requests, r.Success*100, r.P50ms, r.P99ms, r.CPUPerReqUs)
	}
	load1, _ := os.ReadFile("/proc/loadavg")

	gw := target{name: "gateway", url: c.gatewayURL, key: c.gatewayKey, model: c.model}
	direct := target{name: "direct", url: c.directURL, key: c.directKey, model: c.upstreamModel}

	// 1. One request at a time, gateway and direct interleaved in rounds.
	for _, stream := range []bool{false, true} {
		name := "c1"
		if stream {
			name = "c1-stream-ttfb"
		}
		lat := map[string][]time.Duration{}
		var cpu time.Duration
		var n int
		for round := 0; round < c.rounds; round++ {
			for _, t := range []target{gw, direct} {
				before := cpuTime(c.gatewayPID)
				ds, err := sequential(ctx, t, c.perRound, stream)
				if err != nil {
					return fmt.Errorf("%s %s: %w", name, t.name, err)
				}
				if t.name == "gateway" {
					cpu += cpuTime(c.gatewayPID) - before
					n += len(ds)
				}
				lat[t.name] = append(lat[t.name], ds...)
			}
		}
		for _, t := range []target{gw, direct} {
			r := fromDurations(name, t.name, lat[t.name])
			if t.name == "gateway" && n > 0 {
				r.CPUPerReqUs = float64(cpu.Microseconds()) / float64(n)
			}
			emit(r)
		}
	}

	// 2. Fixed open-loop rates, gateway then direct at each rate.
	for _, rate := range c.rates {
		for _, t := range []target{gw, direct} {
			r, err := attack(ctx, c, t, fmt.Sprintf("rate-%d", rate), vegeta.Rate{Freq: rate, Per: time.Second}, c.step)
			if err != nil {
				return err
			}
			r.Rate = rate
			emit(r)
		}
	}

	// 3. A slow upstream (50 ms) at 100 requests/s.
	if c.slowGatewayModel != "" && c.slowDirectURL != "" {
		for _, t := range []target{{name: "gateway", url: c.gatewayURL, key: c.gatewayKey, model: c.slowGatewayModel},
			{name: "direct", url: c.slowDirectURL, key: c.directKey, model: c.upstreamModel}} {
			r, err := attack(ctx, c, t, "upstream-50ms", vegeta.Rate{Freq: 100, Per: time.Second}, c.step)
			if err != nil {
				return err
			}
			r.Rate = 100
			emit(r)
		}
	}

	// 4. Closed loop: a fixed number of connections as fast as they go.
	for _, t := range []target{gw, direct} {
		r, err := attack(ctx, c, t, "saturation", vegeta.ConstantPacer{}, c.step)
		if err != nil {
			return err
		}
		if t.name == "gateway" {
			r.RSSMB = peakRSSMB(c.gatewayPID)
		}
		emit(r)
	}

	if writeErr != nil {
		return writeErr
	}
	load2, _ := os.ReadFile("/proc/loadavg")
	md := report(c, all, strings.TrimSpace(string(load1)), strings.TrimSpace(string(load2)))
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o600); err != nil {
		return err
	}
	fmt.Println(md)
	fmt.Fprintf(os.Stderr, "results: %s\n", dir)
	return nil
}

type target struct {
	name, url, key, model string
}

func (t target) body(stream bool) []byte {
	if stream {
		return []byte(`{"model":"` + t.model + `","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Benchmark me, please."}]}`)
	}
	return []byte(`{"model":"` + t.model + `","messages":[{"role":"user","content":"Benchmark me, please."}]}`)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}}

// sequential sends n requests one after another and returns each latency:
// the whole response, or the first body byte for a stream.
func sequential(ctx context.Context, t target, n int, stream bool) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	body := t.body(stream)
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url+"/chat/completions", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+t.key)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		var d time.Duration
		if stream {
			br := bufio.NewReader(resp.Body)
			if _, err := br.ReadByte(); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("read first byte: %w", err)
			}
			d = time.Since(start)
			_, _ = io.Copy(io.Discard, br)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			d = time.Since(start)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %d", resp.StatusCode)
		}
		out = append(out, d)
	}
	return out, nil
}

func attack(ctx context.Context, c config, t target, scenario string, pacer vegeta.Pacer, d time.Duration) (result, error) {
	tgt := vegeta.Target{Method: http.MethodPost, URL: t.url + "/chat/completions", Body: t.body(false),
		Header: http.Header{"Authorization": {"Bearer " + t.key}, "Content-Type": {"application/json"}}}
	opts := []func(*vegeta.Attacker){vegeta.KeepAlive(true), vegeta.Connections(10000), vegeta.Timeout(30 * time.Second)}
	if _, closed := pacer.(vegeta.ConstantPacer); closed {
		w := uint64(max(c.satWorkers, 1))
		opts = append(opts, vegeta.Workers(w), vegeta.MaxWorkers(w))
	} else {
		opts = append(opts, vegeta.Workers(32))
	}
	// An Attacker stops itself at the end of an attack: one per attack.
	if c.warmup > 0 {
		for range vegeta.NewAttacker(opts...).Attack(vegeta.NewStaticTargeter(tgt), pacer, c.warmup, "warmup") {
		}
	}
	profiled := make(chan error, 1)
	if c.pprofURL != "" && t.name == "gateway" && scenario == "rate-1000" {
		go func() {
			profiled <- profile(ctx, c.pprofURL, d-2*time.Second, filepath.Join(c.dir, "gateway-cpu-rate-1000.pprof"))
		}()
	} else {
		profiled <- nil
	}
	before := cpuTime(c.gatewayPID)
	var m vegeta.Metrics
	for res := range vegeta.NewAttacker(opts...).Attack(vegeta.NewStaticTargeter(tgt), pacer, d, scenario) {
		m.Add(res)
	}
	m.Close()
	cpu := cpuTime(c.gatewayPID) - before
	if m.Requests == 0 {
		return result{}, fmt.Errorf("%s %s: no request was sent", scenario, t.name)
	}
	if err := <-profiled; err != nil {
		return result{}, fmt.Errorf("profile the gateway: %w", err)
	}
	r := result{Scenario: scenario, Target: t.name, Requests: m.Requests, Success: m.Success, Throughput: m.Throughput,
		P50ms: ms(m.Latencies.P50), P90ms: ms(m.Latencies.P90), P99ms: ms(m.Latencies.P99), MaxMs: ms(m.Latencies.Max), Errors: m.Errors}
	if t.name == "gateway" && m.Requests > 0 && c.gatewayPID > 0 {
		r.CPUPerReqUs = float64(cpu.Microseconds()) / float64(m.Requests)
	}
	return r, ctx.Err()
}

func fromDurations(scenario, target string, ds []time.Duration) result {
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

// cpuTime is the user+system CPU time of pid so far (clock ticks of 10 ms).
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func peakRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func report(c config, all []result, loadBefore, loadAfter string) string {
	find := func(scenario, target string) (result, bool) {
		for _, r := range all {
			if r.Scenario == scenario && r.Target == target {
				return r, true
			}
		}
		return result{}, false
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Gateway overhead (%s)\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Features on: %s. GOMAXPROCS of the gateway: %s. Load average before: %s; after: %s.\n\n",
		c.features, os.Getenv("BENCH_GATEWAY_GOMAXPROCS"), loadBefore, loadAfter)
	b.WriteString("| scenario | rate | gateway p50 / p99 ms | direct p50 / p99 ms | added p50 / p99 ms | gateway CPU µs/req | success gw / direct | throughput gw / direct rps |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	seen := map[string]bool{}
	for _, r := range all {
		if seen[r.Scenario] || r.Target != "gateway" {
			continue
		}
		seen[r.Scenario] = true
		d, _ := find(r.Scenario, "direct")
		rate := "—"
		if r.Rate > 0 {
			rate = strconv.Itoa(r.Rate)
		}
		fmt.Fprintf(&b, "| %s | %s | %.3f / %.3f | %.3f / %.3f | %.3f / %.3f | %.1f | %.1f%% / %.1f%% | %.0f / %.0f |\n",
			r.Scenario, rate, r.P50ms, r.P99ms, d.P50ms, d.P99ms, r.P50ms-d.P50ms, r.P99ms-d.P99ms, r.CPUPerReqUs,
			r.Success*100, d.Success*100, r.Throughput, d.Throughput)
	}
	if r, ok := find("saturation", "gateway"); ok {
		fmt.Fprintf(&b, "\nPeak RSS of the gateway: %.1f MB. Saturation: %.0f req/s through the gateway, %d connections.\n", r.RSSMB, r.Throughput, c.satWorkers)
	}
	return b.String()
}

// profile saves a CPU profile of the gateway taken over d.
func profile(ctx context.Context, base string, d time.Duration, path string) error {
	secs := max(int(d/time.Second), 1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	f, err := os.Create(path) //nolint:gosec // inside this run's output folder
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
