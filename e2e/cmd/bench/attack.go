package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// step is one measured attack: its result line and the platform samples
// taken around it, so that the caller can add the CPU spent on its
// backlog after it.
type step struct {
	result
	warmupRequests uint64
	beforeWarmup   sample // before the warm-up
}

// attack runs scenario against t for d after a warm-up, open loop at
// pacer's rate or closed loop (vegeta.ConstantPacer{}) with c.satWorkers
// connections. Against the gateway it also measures every platform
// component's CPU time during the step and the gateway's peak RSS.
func attack(ctx context.Context, c config, t target, scenario string, pacer vegeta.Pacer, d time.Duration) (step, error) {
	tgt := vegeta.Target{Method: http.MethodPost, URL: t.url, Body: t.body(false), Header: t.header}
	opts := []func(*vegeta.Attacker){vegeta.KeepAlive(true), vegeta.Connections(10000), vegeta.Timeout(30 * time.Second)}
	closed := isClosedLoop(pacer)
	if closed {
		w := uint64(max(c.satWorkers, 1))
		opts = append(opts, vegeta.Workers(w), vegeta.MaxWorkers(w))
	} else {
		// Open loop: vegeta adds a worker whenever all are waiting. The
		// bound only keeps the load generator within its file descriptors
		// (and the loopback's ports) when a gateway stops answering; it is
		// far above what a gateway shedding at MAX_IN_FLIGHT holds.
		opts = append(opts, vegeta.Workers(32), vegeta.MaxWorkers(openLoopMaxWorkers))
	}
	gateway := t.name == "gateway"
	var st step
	if gateway {
		st.beforeWarmup = c.platform.read()
	}
	// An Attacker stops itself at the end of an attack: one per attack.
	if c.warmup > 0 {
		for range hits(ctx, vegeta.NewAttacker(opts...), tgt, pacer, c.warmup, "warmup") {
			st.warmupRequests++
		}
	}
	profiled := make(chan error, 1)
	if c.pprofURL != "" && gateway && (scenario == "rate-1000" || scenario == "rate-1000-translated") {
		go func() {
			profiled <- profile(ctx, c.pprofURL, d-2*time.Second, filepath.Join(c.dir, "gateway-cpu-"+scenario+".pprof"))
		}()
	} else {
		profiled <- nil
	}
	var rss peakRSS
	if gateway {
		rss.start(c.gatewayPID)
	}
	before := c.platform.read()
	mockBefore := c.mockCPU(gateway)
	var m vegeta.Metrics
	var shed shedStats
	for res := range hits(ctx, vegeta.NewAttacker(opts...), tgt, pacer, d, scenario) {
		m.Add(res)
		shed.add(res)
	}
	m.Close()
	after := c.platform.read()
	mockUsed := c.mockCPU(gateway) - mockBefore
	stepRSS := rss.stop()
	if m.Requests == 0 {
		return st, fmt.Errorf("%s %s: no request was sent", scenario, t.name)
	}
	if err := <-profiled; err != nil {
		return st, fmt.Errorf("profile the gateway: %w", err)
	}
	r := result{Scenario: scenario, Target: t.name, Requests: m.Requests, Success: m.Success, Throughput: m.Throughput,
		P50ms: ms(m.Latencies.P50), P90ms: ms(m.Latencies.P90), P99ms: ms(m.Latencies.P99), MaxMs: ms(m.Latencies.Max),
		StatusCodes: m.StatusCodes, Errors: m.Errors}
	if gateway {
		used := after.since(before)
		r.CPUPerReqUs = us(used["gateway"]) / float64(m.Requests)
		r.StepRSSMB = stepRSS
		if len(c.platform.pids) > 0 || c.platform.postgresPID > 0 {
			r.Platform = &platformCPU{UsPerRequest: used.perRequestUs(m.Requests), TotalUs: us(used.total()) / float64(m.Requests)}
		}
		r.Load = shed.load(m)
	} else if c.mockPID > 0 && !closed {
		r.MockCPUPerReqUs = us(mockUsed) / float64(m.Requests)
	}
	st.result = r
	return st, ctx.Err()
}

// mockCPU is the mock provider's CPU time so far, on a direct step (zero
// on a gateway step, where the mock also serves the gateway).
func (c config) mockCPU(gateway bool) time.Duration {
	if gateway || c.mockPID <= 0 {
		return 0
	}
	return threadsCPU(c.mockPID)
}

// openLoopMaxWorkers bounds the requests in flight of an open-loop step.
const openLoopMaxWorkers = 8000

// isClosedLoop reports whether pacer is the closed loop, a ConstantPacer
// of no frequency: every worker sends as fast as it gets answers.
// vegeta.Rate is an alias of ConstantPacer, so the type alone does not
// tell a fixed rate from it.
func isClosedLoop(pacer vegeta.Pacer) bool {
	p, ok := pacer.(vegeta.ConstantPacer)
	return ok && p.Freq == 0
}

// hits starts an attack that ends early when ctx does.
func hits(ctx context.Context, a *vegeta.Attacker, tgt vegeta.Target, p vegeta.Pacer, d time.Duration, name string) <-chan *vegeta.Result {
	out := make(chan *vegeta.Result)
	go func() {
		defer close(out)
		stop := context.AfterFunc(ctx, func() { a.Stop() })
		defer stop()
		for res := range a.Attack(vegeta.NewStaticTargeter(tgt), p, d, name) {
			out <- res
		}
	}()
	return out
}

// shedStats counts the answers of an open-loop step by kind.
type shedStats struct {
	ok, shed, other          uint64
	noRetryAfter, notErrJSON uint64
	messages                 map[string]uint64 // of the 503 answers: which gate shed
	okLatencies              []time.Duration
}

// maxShedMessages bounds the distinct 503 messages kept.
const maxShedMessages = 8

func (s *shedStats) add(r *vegeta.Result) {
	switch {
	case r.Code >= 200 && r.Code < 300:
		s.ok++
		s.okLatencies = append(s.okLatencies, r.Latency)
	case r.Code == http.StatusServiceUnavailable:
		s.shed++
		if r.Headers.Get("Retry-After") == "" {
			s.noRetryAfter++
		}
		// The client's format: an OpenAI error object.
		var e struct {
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(r.Body, &e) != nil || e.Error == nil || e.Error.Message == "" {
			s.notErrJSON++
			break
		}
		if s.messages == nil {
			s.messages = map[string]uint64{}
		}
		msg := e.Error.Message
		if _, seen := s.messages[msg]; !seen && len(s.messages) >= maxShedMessages {
			msg = "(other messages)"
		}
		s.messages[msg]++
	default:
		s.other++
	}
}

// load summarizes what the gateway served and shed, per second of the
// step (vegeta's throughput denominator: attack plus wait).
func (s *shedStats) load(m vegeta.Metrics) *loadStats {
	secs := (m.Duration + m.Wait).Seconds()
	if secs <= 0 {
		return nil
	}
	sort.Slice(s.okLatencies, func(i, j int) bool { return s.okLatencies[i] < s.okLatencies[j] })
	q := func(p float64) float64 {
		if len(s.okLatencies) == 0 {
			return 0
		}
		return ms(s.okLatencies[min(len(s.okLatencies)-1, int(p*float64(len(s.okLatencies))))])
	}
	return &loadStats{OfferedRPS: m.Rate, ServedPerS: float64(s.ok) / secs, ShedPerS: float64(s.shed) / secs,
		OtherPerS: float64(s.other) / secs, Served: s.ok, Shed: s.shed, Other: s.other,
		ShedWithoutRetryAfter: s.noRetryAfter, ShedNotClientFormat: s.notErrJSON, ShedMessages: s.messages,
		OKP50ms: q(0.5), OKP99ms: q(0.99)}
}

// peakRSS samples a process's resident memory during a step: VmHWM
// would report the peak since the process started, earlier steps
// included.
type peakRSS struct {
	mu   sync.Mutex
	max  float64
	done chan struct{}
	wg   sync.WaitGroup
}

func (p *peakRSS) start(pid int) {
	if pid <= 0 {
		return
	}
	p.done = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			v := rssMB(pid, "VmRSS")
			p.mu.Lock()
			p.max = max(p.max, v)
			p.mu.Unlock()
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *peakRSS) stop() float64 {
	if p.done == nil {
		return 0
	}
	close(p.done)
	p.wg.Wait()
	return p.max
}

// drain waits until the platform is idle again after a step, for at most
// c.drainMax: billing, audit, NATS and PostgreSQL ingest the usage events
// asynchronously, so a step's work may go on after it. Idle means that
// the platform spent at most c.idleCeiling of CPU in the last second.
func drain(ctx context.Context, c config) (time.Duration, bool) {
	const every = 250 * time.Millisecond
	const window = 4 // samples: one second
	start := time.Now()
	hist := []time.Duration{c.platform.read().total()}
	for time.Since(start) < c.drainMax {
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(every):
		}
		hist = append(hist, c.platform.read().total())
		if len(hist) > window {
			if hist[len(hist)-1]-hist[len(hist)-1-window] <= c.idleCeiling {
				return time.Since(start), true
			}
		}
	}
	return time.Since(start), false
}

// withBacklog completes a gateway step's platform CPU with what was
// spent from its warm-up to the end of the drain after it (extra
// requests, like the recovery probe, sent in between), per request of the
// warm-up, step and extras.
func withBacklog(ctx context.Context, c config, st *step, extra uint64) {
	if st.Platform == nil {
		return
	}
	waited, idle := drain(ctx, c)
	used := c.platform.read().since(st.beforeWarmup)
	n := st.warmupRequests + st.Requests + extra
	st.Platform.WithBacklogUs = us(used.total()) / float64(n)
	st.Platform.WithBacklogByComponent = used.perRequestUs(n)
	st.Platform.DrainS = waited.Seconds()
	st.Platform.Drained = idle
}

// probe is the recovery check after an overload step: wait, then n
// requests one at a time, each of which must answer 200.
func probe(ctx context.Context, c config, gw, direct target, wait time.Duration, n int, c1P50 float64) (*recovery, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(wait):
	}
	rec := &recovery{WaitS: wait.Seconds(), Requests: n, C1P50ms: c1P50}
	var lat []time.Duration
	for range n {
		tm, code, err := once(ctx, gw, false)
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			continue
		}
		if code == http.StatusOK {
			rec.OK++
		}
		lat = append(lat, tm.total)
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		rec.P50ms, rec.MaxMs = ms(lat[len(lat)/2]), ms(lat[len(lat)-1])
	}
	// Direct at the same moment: CPU 1, shared by the mock, the load
	// generator and the platform catching up, may be what is slow.
	var dl []time.Duration
	for range n {
		tm, code, err := once(ctx, direct, false)
		if err == nil && code == http.StatusOK {
			dl = append(dl, tm.total)
		}
	}
	if len(dl) > 0 {
		sort.Slice(dl, func(i, j int) bool { return dl[i] < dl[j] })
		rec.DirectP50ms = ms(dl[len(dl)/2])
	}
	rec.Recovered = rec.OK == n && (c1P50 <= 0 || rec.P50ms <= recoveryFactor*c1P50)
	return rec, ctx.Err()
}

// recoveryFactor is how far above the one-at-a-time p50 the recovery
// probe's p50 may be to count as "close": a backlog shows as many times
// more.
const recoveryFactor = 2.0

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
		_ = f.Close() // the copy error is the one reported; the file is discarded
		return err
	}
	return f.Close()
}
