// Command etcdload is a closed-loop Put load generator for etcd, the gRPC counterpart of
// raftbench: C concurrent clients, each with its own clientv3.Client (its own gRPC
// connection), Put unique keys with fixed-size values for a duration (or a request count),
// and one line is printed in raftbench's text shape:
//
//	mode=put connections=64 elapsed=10.00s ok=... errors=0 req/s=... p50=...ms p90=...ms
//	p99=...ms max=...ms stopped_by=duration
//
// so that bench/compare.sh parses both alike. -preload N first writes N keys with the same
// clients and reports them in a line of the same shape (on stderr, or on stdout when
// -duration 0 makes the preload the only phase).
//
// It builds in GOPATH mode against Debian's golang-etcd-server-dev (etcd 3.4's clientv3):
//
//	GO111MODULE=off GOPATH=$tmp:/usr/share/gocode go build -o etcdload .
//
// Every request is bounded by -timeout, and no request starts after -duration, so a run
// always ends; the preload is bounded by -preload-timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/status"
)

// stats is one client's counts: latencies of successful Puts (µs) and failures by label.
type stats struct {
	ok        uint64
	latencyUs []uint32
	errors    map[string]uint64
}

func (s *stats) count(err error, took time.Duration) {
	if err == nil {
		s.ok++
		us := took.Microseconds()
		if us < 1 {
			us = 1
		}
		if us > int64(^uint32(0)) {
			us = int64(^uint32(0))
		}
		s.latencyUs = append(s.latencyUs, uint32(us))
		return
	}
	s.errors[label(err)]++
}

// label names a failure like raftbench does: "timeout", or the gRPC code's name.
func label(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.DeadlineExceeded {
			return "timeout"
		}
		return st.Code().String()
	}
	return "io"
}

// run is one phase: conns clients Put keys prefix+ticket until the deadline passes or
// maxRequests tickets were taken.
type run struct {
	clients     []*clientv3.Client
	prefix      string
	value       string
	deadline    time.Time
	maxRequests uint64 // 0: no bound
	timeout     time.Duration
	tickets     uint64
}

// loop runs all clients and returns the merged stats and the elapsed time from the start to
// the last answer.
func (r *run) loop() (stats, time.Duration) {
	start := time.Now()
	per := make([]stats, len(r.clients))
	ends := make([]time.Time, len(r.clients))
	var wg sync.WaitGroup
	for i, c := range r.clients {
		wg.Add(1)
		go func(i int, c *clientv3.Client) {
			defer wg.Done()
			s := stats{errors: map[string]uint64{}}
			for {
				if !time.Now().Before(r.deadline) {
					break
				}
				ticket := atomic.AddUint64(&r.tickets, 1) - 1
				if r.maxRequests > 0 && ticket >= r.maxRequests {
					break
				}
				key := fmt.Sprintf("%s%d", r.prefix, ticket)
				ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
				t0 := time.Now()
				_, err := c.Put(ctx, key, r.value)
				took := time.Since(t0)
				cancel()
				s.count(err, took)
				if err != nil && label(err) == "Unavailable" {
					// A closed loop against a dead endpoint would otherwise spin.
					time.Sleep(10 * time.Millisecond)
				}
			}
			per[i] = s
			ends[i] = time.Now()
		}(i, c)
	}
	wg.Wait()
	merged := stats{errors: map[string]uint64{}}
	last := start
	for i, s := range per {
		merged.ok += s.ok
		merged.latencyUs = append(merged.latencyUs, s.latencyUs...)
		for l, n := range s.errors {
			merged.errors[l] += n
		}
		if ends[i].After(last) {
			last = ends[i]
		}
	}
	return merged, last.Sub(start)
}

func msAt(sorted []uint32, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1000.0
}

func line(conns int, s stats, elapsed time.Duration, stoppedBy string) string {
	lat := s.latencyUs
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	var total uint64
	var parts []string
	for l, n := range s.errors {
		total += n
		parts = append(parts, fmt.Sprintf("%s:%d", l, n))
	}
	sort.Strings(parts)
	errs := "0"
	if total > 0 {
		errs = fmt.Sprintf("%d(%s)", total, strings.Join(parts, ","))
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(s.ok) / elapsed.Seconds()
	}
	max := 0.0
	if len(lat) > 0 {
		max = float64(lat[len(lat)-1]) / 1000.0
	}
	return fmt.Sprintf("mode=put connections=%d elapsed=%.2fs ok=%d errors=%s req/s=%.1f "+
		"p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms stopped_by=%s",
		conns, elapsed.Seconds(), s.ok, errs, rate,
		msAt(lat, 0.50), msAt(lat, 0.90), msAt(lat, 0.99), max, stoppedBy)
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "etcdload: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	endpoint := flag.String("endpoint", "127.0.0.1:12380", "the one etcd client endpoint every client connects to")
	conns := flag.Int("connections", 16, "concurrent closed-loop clients, each with its own clientv3.Client")
	duration := flag.Duration("duration", 10*time.Second, "timed run length (0: no timed run)")
	requests := flag.Uint64("requests", 0, "stop the timed run after this many Puts (0: no bound)")
	valueSize := flag.Int("value-size", 100, "bytes per value")
	preload := flag.Uint64("preload", 0, "keys written before the timed run (not measured)")
	preloadTimeout := flag.Duration("preload-timeout", 30*time.Minute, "bound on the preload")
	timeout := flag.Duration("timeout", 5*time.Second, "bound on each Put")
	prefix := flag.String("key-prefix", "", "key prefix (default etcdload-<unix seconds>-)")
	flag.Parse()
	if *conns < 1 || *conns > 10000 {
		die("-connections must be between 1 and 10000")
	}
	if *duration <= 0 && *preload == 0 {
		die("nothing to do: give -duration > 0 or -preload N")
	}
	if *prefix == "" {
		*prefix = fmt.Sprintf("etcdload-%d-", time.Now().Unix())
	}
	// gRPC's own logging would print every reconnect; the report is what matters.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, os.Stderr))
	clientv3.SetLogger(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, os.Stderr))

	quiet := zapErrorsOnly()
	clients := make([]*clientv3.Client, *conns)
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{*endpoint},
			DialTimeout: 5 * time.Second,
			LogConfig:   quiet,
		})
		if err != nil {
			die("cannot connect client %d to %s: %v", i, *endpoint, err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	value := strings.Repeat("v", *valueSize)

	if *preload > 0 {
		r := &run{clients: clients, prefix: *prefix + "pre-", value: value,
			deadline: time.Now().Add(*preloadTimeout), maxRequests: *preload,
			timeout: *timeout}
		s, elapsed := r.loop()
		var failed uint64
		for _, n := range s.errors {
			failed += n
		}
		stoppedBy := "duration"
		if r.tickets >= *preload {
			stoppedBy = "requests"
		}
		out := os.Stderr
		if *duration <= 0 {
			out = os.Stdout
		}
		fmt.Fprintln(out, line(*conns, s, elapsed, stoppedBy))
		if failed > 0 || r.tickets < *preload {
			die("preload incomplete: %d failed, %d of %d issued", failed,
				minU(r.tickets, *preload), *preload)
		}
	}
	if *duration <= 0 {
		return
	}
	r := &run{clients: clients, prefix: *prefix, value: value,
		deadline: time.Now().Add(*duration), maxRequests: *requests,
		timeout: *timeout}
	s, elapsed := r.loop()
	stoppedBy := "duration"
	if *requests > 0 && r.tickets >= *requests {
		stoppedBy = "requests"
	}
	fmt.Println(line(*conns, s, elapsed, stoppedBy))
}

// zapErrorsOnly is clientv3's logger config with only errors printed.
func zapErrorsOnly() *zap.Config {
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	c.Encoding = "console"
	c.OutputPaths = []string{"stderr"}
	c.ErrorOutputPaths = []string{"stderr"}
	return &c
}

func minU(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}
