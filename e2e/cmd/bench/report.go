package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Targets of PERFORMANCE.md, and of this round where it asks less.
const (
	targetPlatformUs     = 250 // whole platform CPU per request at 1000 req/s
	targetGatewayUs      = 80  // gateway CPU per request at 1000 req/s
	targetGatewayRoundUs = 100 // this round's gateway target
	targetCPURatio       = 1.3 // translated / native gateway CPU
	collapseP50ms        = 1000
	collapseRSSMB        = 100
	// stableFactor bounds the p50 of the served requests of an overload
	// step that serves everything, as a multiple of the one-at-a-time p50.
	stableFactor = 10
	// shedShare is the share of 503 answers from which a step shed load.
	shedShare = 0.01
)

// Outcomes of an overload step.
const (
	outcomeStable    = "served at stable latency"
	outcomeShed      = "shed the excess"
	outcomeCollapsed = "collapsed"
	outcomeDegraded  = "degraded" // neither shed nor stable, not collapsed either
)

// outcome names what the gateway did with an overload step (PERFORMANCE.md:
// shed the excess at once or serve at stable latency, RSS ≤ 100 MB), and
// says why.
func outcome(r result, c1P50 float64) (string, string) {
	l := r.Load
	share := func(n uint64) float64 { return float64(n) / float64(max(r.Requests, 1)) }
	var notes []string
	if l.Other > 0 {
		notes = append(notes, fmt.Sprintf("%.0f other errors/s", l.OtherPerS))
	}
	if l.ShedWithoutRetryAfter > 0 {
		notes = append(notes, fmt.Sprintf("%d 503 without Retry-After", l.ShedWithoutRetryAfter))
	}
	if l.ShedNotClientFormat > 0 {
		notes = append(notes, fmt.Sprintf("%d 503 not in the OpenAI error format", l.ShedNotClientFormat))
	}
	why := func(main string) string { return strings.Join(append([]string{main}, notes...), "; ") }
	switch {
	case l.Served == 0:
		return outcomeCollapsed, why("nothing was served")
	case l.OKP50ms > collapseP50ms || r.P50ms > collapseP50ms:
		return outcomeCollapsed, why(fmt.Sprintf("p50 %.0f ms (served %.0f ms) > 1 s", r.P50ms, l.OKP50ms))
	case r.StepRSSMB > collapseRSSMB:
		return outcomeCollapsed, why(fmt.Sprintf("peak RSS %.0f MB > %d MB", r.StepRSSMB, collapseRSSMB))
	case share(l.Shed) >= shedShare:
		return outcomeShed, why(fmt.Sprintf("%.0f%% answered 503, served p50 %.2f ms", 100*share(l.Shed), l.OKP50ms))
	case share(l.Served) >= 0.99 && (c1P50 <= 0 || l.OKP50ms <= stableFactor*c1P50):
		return outcomeStable, why(fmt.Sprintf("%.1f%% served, p50 %.2f ms", 100*share(l.Served), l.OKP50ms))
	default:
		return outcomeDegraded, why(fmt.Sprintf("%.1f%% served at p50 %.2f ms (one at a time %.2f ms), %.1f%% shed",
			100*share(l.Served), l.OKP50ms, c1P50, 100*share(l.Shed)))
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// findResult is the first result of scenario against target.
func findResult(all []result, scenario, target string) (result, bool) {
	for _, r := range all {
		if r.Scenario == scenario && r.Target == target {
			return r, true
		}
	}
	return result{}, false
}

func report(c config, all []result, sum summary, loadBefore, loadAfter string) string {
	find := func(scenario, target string) (result, bool) { return findResult(all, scenario, target) }
	var b strings.Builder
	fmt.Fprintf(&b, "## Gateway overhead (%s)\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Features on: %s. GOMAXPROCS of the gateway: %s. Load average before: %s; after: %s. "+
		"Idle platform CPU before the run: %.1f ms per second (not subtracted below). Run time %.0f s.\n\n",
		c.features, sum.GatewayGOMAXPROCS, loadBefore, loadAfter, sum.IdleCPUMsPerS, sum.ElapsedS)
	if c.note != "" {
		fmt.Fprintf(&b, "Note: %s\n\n", c.note)
	}
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
	b.WriteString("\nOne at a time, the direct request of the native path is the same OpenAI request to the mock's " +
		"/v1/chat/completions; that of the translated path (model " + c.translatedModel + ", a route to the mock as an Anthropic provider) " +
		"is the equivalent Anthropic Messages request to its /v1/messages.\n")

	if _, ok := find("c1-translated", "gateway"); ok {
		b.WriteString("\n### Translated path next to the native one, one request at a time\n\n")
		b.WriteString("| request | native added p50 / p99 ms | translated added p50 / p99 ms | native gateway CPU µs/req | translated gateway CPU µs/req | CPU translated / native |\n")
		b.WriteString("|---|---|---|---|---|---|\n")
		for _, row := range []struct{ label, native, translated string }{
			{"non-streamed", "c1", "c1-translated"},
			{"streamed, first byte", "c1-stream-ttfb", "c1-translated-stream-ttfb"},
			{"streamed, whole body", "c1-stream-total", "c1-translated-stream-total"},
		} {
			ng, _ := find(row.native, "gateway")
			nd, _ := find(row.native, "direct")
			tg, _ := find(row.translated, "gateway")
			td, _ := find(row.translated, "direct")
			ratio := "—"
			if ng.CPUPerReqUs > 0 {
				ratio = fmt.Sprintf("%.2f", tg.CPUPerReqUs/ng.CPUPerReqUs)
			}
			fmt.Fprintf(&b, "| %s | %.3f / %.3f | %.3f / %.3f | %.1f | %.1f | %s |\n", row.label,
				ng.P50ms-nd.P50ms, ng.P99ms-nd.P99ms, tg.P50ms-td.P50ms, tg.P99ms-td.P99ms, ng.CPUPerReqUs, tg.CPUPerReqUs, ratio)
		}
		fmt.Fprintf(&b, "\nGateway CPU, translated / native: %.2f non-streamed (target ≤ %.1f: %s), %.2f streamed (%s).\n",
			sum.CPURatio, targetCPURatio, verdict(sum.CPURatio > 0 && sum.CPURatio <= targetCPURatio),
			sum.CPURatioStream, verdict(sum.CPURatioStream > 0 && sum.CPURatioStream <= targetCPURatio))
	}

	b.WriteString(platformTable(c, all))

	for _, r := range all {
		if r.Target == "gateway" && r.Load != nil && r.Load.Outcome != "" {
			b.WriteString(overloadSection(r))
		}
	}

	if r, ok := find("saturation", "gateway"); ok {
		fmt.Fprintf(&b, "\nPeak RSS of the gateway: %.1f MB (VmHWM, the whole run). Saturation: %.0f req/s served (2xx) through the gateway, %d connections",
			r.RSSMB, r.Throughput, c.satWorkers)
		if l := r.Load; l != nil {
			fmt.Fprintf(&b, "; answered %.0f req/s: %.0f/s 2xx, %.0f/s 503, %.0f/s other errors.%s",
				l.ServedPerS+l.ShedPerS+l.OtherPerS, l.ServedPerS, l.ShedPerS, l.OtherPerS, shedMessages(l))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// platformTable reports each gateway step's CPU per request, component by
// component, from /proc.
func platformTable(c config, all []result) string {
	var present []string
	for _, name := range components {
		if _, ok := c.platform.pids[name]; ok || (name == "postgres" && c.platform.postgresPID > 0) {
			present = append(present, name)
		}
	}
	if len(present) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n### Whole-platform CPU per request (from /proc, µs per request during the step)\n\n")
	b.WriteString("| scenario | rate | " + strings.Join(present, " | ") + " | platform | with backlog | drain |\n")
	b.WriteString("|---|---|" + strings.Repeat("---|", len(present)) + "---|---|---|\n")
	for _, r := range all {
		if r.Target != "gateway" || r.Platform == nil {
			continue
		}
		rate := "—"
		if r.Rate > 0 {
			rate = strconv.Itoa(r.Rate)
		}
		fmt.Fprintf(&b, "| %s | %s |", r.Scenario, rate)
		for _, name := range present {
			fmt.Fprintf(&b, " %.1f |", r.Platform.UsPerRequest[name])
		}
		drained := fmt.Sprintf("%.1f s", r.Platform.DrainS)
		if !r.Platform.Drained {
			drained = fmt.Sprintf("not idle after %.0f s", r.Platform.DrainS)
		}
		fmt.Fprintf(&b, " **%.1f** | %.1f | %s |\n", r.Platform.TotalUs, r.Platform.WithBacklogUs, drained)
	}
	fmt.Fprintf(&b, "\nPostgreSQL is the postmaster, its children and its reaped children. \"with backlog\" counts from the start of "+
		"the warm-up to the platform being idle again (at most %s after the step; \"not idle\" makes it a lower bound), over the "+
		"warm-up's and the step's requests: the usage events are ingested asynchronously, and what a step leaves is done after it.\n", c.drainMax)
	for _, scenario := range []string{"rate-1000", "rate-1000-translated"} {
		for _, r := range all {
			if r.Scenario != scenario || r.Target != "gateway" || r.Platform == nil {
				continue
			}
			fmt.Fprintf(&b, "\n%s: platform %.1f µs/req (target ≤ %d: %s; with backlog %.1f), gateway %.1f µs/req (this round ≤ %d: %s; PERFORMANCE.md ≤ %d: %s).\n",
				scenario, r.Platform.TotalUs, targetPlatformUs, verdict(r.Platform.TotalUs <= targetPlatformUs), r.Platform.WithBacklogUs,
				r.CPUPerReqUs, targetGatewayRoundUs, verdict(r.CPUPerReqUs <= targetGatewayRoundUs),
				targetGatewayUs, verdict(r.CPUPerReqUs <= targetGatewayUs))
			if d, ok := findResult(all, scenario, "direct"); ok && d.MockCPUPerReqUs > 0 {
				fmt.Fprintf(&b, "The mock alone on the direct step, one net/http server reading a request and writing its answer: %.1f µs/req "+
					"(the gateway is a server and a client: %.2f× the mock).\n", d.MockCPUPerReqUs, r.CPUPerReqUs/d.MockCPUPerReqUs)
			}
		}
	}
	return b.String()
}

// overloadSection reports an overload step: what was served and shed, the
// memory, the recovery and the outcome.
func overloadSection(r result) string {
	l := r.Load
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Overload: %s (open loop, %.0f req/s offered)\n\n", r.Scenario, l.OfferedRPS)
	b.WriteString("| served 2xx/s | shed 503/s | other errors/s | served p50 / p99 ms | all p50 / p99 ms | gateway peak RSS MB (step) | recovered |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	recovered := "—"
	if l.Recovery != nil {
		recovered = map[bool]string{true: "yes", false: "no"}[l.Recovery.Recovered]
	}
	fmt.Fprintf(&b, "| %.0f | %.0f | %.0f | %.3f / %.3f | %.3f / %.3f | %.1f | %s |\n",
		l.ServedPerS, l.ShedPerS, l.OtherPerS, l.OKP50ms, l.OKP99ms, r.P50ms, r.P99ms, r.StepRSSMB, recovered)
	fmt.Fprintf(&b, "\nStatus codes: %s. 503 answers without Retry-After: %d; not in the OpenAI error format: %d.%s\n",
		codes(r.StatusCodes), l.ShedWithoutRetryAfter, l.ShedNotClientFormat, shedMessages(l))
	if rec := l.Recovery; rec != nil {
		state := "recovered without a backlog"
		if !rec.Recovered {
			state = "did not recover"
		}
		fmt.Fprintf(&b, "\nRecovery: %.0f s after the step, %d requests one at a time: %d answered 200, p50 %.3f ms, max %.3f ms "+
			"(one at a time earlier: p50 %.3f ms, close means ≤ %.0f×; direct to the mock right after: p50 %.3f ms): %s.\n",
			rec.WaitS, rec.Requests, rec.OK, rec.P50ms, rec.MaxMs, rec.C1P50ms, recoveryFactor, rec.DirectP50ms, state)
	}
	fmt.Fprintf(&b, "\n**Outcome: %s** (%s).\n", l.Outcome, l.Why)
	return b.String()
}

// shedMessages lists the messages of the 503 answers, most frequent first.
func shedMessages(l *loadStats) string {
	if len(l.ShedMessages) == 0 {
		return ""
	}
	msgs := make([]string, 0, len(l.ShedMessages))
	for m := range l.ShedMessages {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool {
		if a, b := l.ShedMessages[msgs[i]], l.ShedMessages[msgs[j]]; a != b {
			return a > b
		}
		return msgs[i] < msgs[j]
	})
	parts := make([]string, len(msgs))
	for i, m := range msgs {
		parts[i] = fmt.Sprintf("%d × %q", l.ShedMessages[m], m)
	}
	return " 503 messages: " + strings.Join(parts, ", ") + "."
}

func codes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if k == "0" {
			name = "no answer"
		}
		parts[i] = fmt.Sprintf("%s × %d", name, m[k])
	}
	return strings.Join(parts, ", ")
}
