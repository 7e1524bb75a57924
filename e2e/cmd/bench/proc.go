package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// components lists the platform's process groups in report order. Only
// those given pids are measured.
var components = []string{"gateway", "nats", "billing", "audit", "identity", "config", "postgres"}

// clockTick is USER_HZ, the unit of the times in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// platform reads the CPU time of the platform's processes from /proc.
// The Go services and NATS are single processes; PostgreSQL is the
// postmaster with its children, and its reaped children's times, so that
// backends that exit during a step still count.
type platform struct {
	pids        map[string]int // component -> pid, postgres excluded
	postgresPID int
}

// sample is the CPU time each component has used so far.
type sample map[string]time.Duration

// read samples every component.
func (p platform) read() sample {
	s := make(sample, len(p.pids)+1)
	for name, pid := range p.pids {
		s[name] = threadsCPU(pid)
	}
	if p.postgresPID > 0 {
		s["postgres"] = groupCPU(p.postgresPID)
	}
	return s
}

// total is the CPU time of all components.
func (s sample) total() time.Duration {
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t
}

// since is the CPU time each component used between earlier and s.
func (s sample) since(earlier sample) sample {
	d := make(sample, len(s))
	for name, v := range s {
		d[name] = max(v-earlier[name], 0)
	}
	return d
}

// perRequestUs divides each component's time by n, in µs.
func (s sample) perRequestUs(n uint64) map[string]float64 {
	out := make(map[string]float64, len(s))
	for name, d := range s {
		out[name] = us(d) / float64(n)
	}
	return out
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// threadsCPU is the CPU time of pid so far: the sum of its threads'
// run times from /proc/<pid>/task/*/schedstat, in nanoseconds, since the
// clock ticks of /proc/<pid>/stat (10 ms) are too coarse for a few
// hundred requests of 100 µs each. The Go runtime does not end its
// threads, so no time is lost with an exited one. Without schedstat it
// falls back to stat.
func threadsCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/[0-9]*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return statCPU(pid, false)
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t) //nolint:gosec // a /proc path built from a pid
		if err != nil {
			continue // the thread ended between the glob and the read
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		sum += time.Duration(ns)
	}
	if sum == 0 {
		return statCPU(pid, false)
	}
	return sum
}

// stat holds the fields of /proc/<pid>/stat that are read here.
type stat struct {
	ppid                         int
	utime, stime, cutime, cstime int64 // clock ticks
}

func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, ppid 4, utime 14 ... cstime 17.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return stat{}, false
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 15 {
		return stat{}, false
	}
	var st stat
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseInt(f[11], 10, 64)
	st.stime, _ = strconv.ParseInt(f[12], 10, 64)
	st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return st, true
}

// statCPU is utime+stime of pid, plus the times of its reaped children
// when children is set.
func statCPU(pid int, children bool) time.Duration {
	st, ok := readStat(pid)
	if !ok {
		return 0
	}
	t := st.utime + st.stime
	if children {
		t += st.cutime + st.cstime
	}
	return time.Duration(t) * clockTick
}

// groupCPU is the CPU time of a process and its children: its own, that
// of its children that ended (cutime and cstime, once it has reaped them)
// and that of the children alive now.
func groupCPU(parent int) time.Duration {
	total := statCPU(parent, true)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return total
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == parent {
			continue
		}
		st, ok := readStat(pid)
		if !ok || st.ppid != parent {
			continue
		}
		total += time.Duration(st.utime+st.stime+st.cutime+st.cstime) * clockTick
	}
	return total
}

// rssMB reads a VmRSS (now) or VmHWM (peak since start) line of
// /proc/<pid>/status, in MB.
func rssMB(pid int, field string) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
