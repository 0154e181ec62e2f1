// Command bench prints IronLB's benchmark figures, one per line:
//
//	BENCH <name> <value> <unit>
//
// It summarizes `go test -bench` output (medians over -count runs) and runs
// the end-to-end benchmarks against a real control plane and the real
// binaries. `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

func main() {
	gobench := flag.String("gobench", "", "a file of `go test -bench` output to summarize")
	only := flag.String("only", "", "comma-separated benchmark groups to run (l2, bgp, bfd, heartbeat, services, cp, cp-bgp, dhcp, chaos, scale); empty runs all but chaos (make chaos) and scale")
	trials := flag.Int("trials", 3, "trials per end-to-end figure; the median is printed")
	growthOf := flag.String("scale-growth", "", "a file of the scale group's BENCH lines (make scale's .cache/scale.txt): print how each figure grows with nodes and with Services (fitted exponents), then run the groups -only names")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile to the file (for groups measured in-process, such as heartbeat)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}

	if *growthOf != "" {
		f, err := os.Open(*growthOf)
		if err != nil {
			fail(err)
		}
		err = reportGrowth(f)
		f.Close()
		if err != nil {
			fail(fmt.Errorf("%s: %w", *growthOf, err))
		}
		if *only == "" {
			return
		}
	}
	if *gobench != "" {
		if err := summarizeGoBench(*gobench); err != nil {
			fail(err)
		}
	}
	groups := map[string]func(context.Context, int) error{
		"services":  benchServices,
		"l2":        benchL2,
		"chaos":     benchChaos,
		"bgp":       benchBGP,
		"bfd":       benchBFD,
		"heartbeat": benchHeartbeat,
		"cp":        benchCP,
		"cp-bgp":    benchCPBGP,
		"dhcp":      benchDHCP,
		"scale":     benchScale,
	}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), name) || *only == "" && (name == "chaos" || name == "scale") {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
		err := groups[name](ctx, *trials)
		cancel()
		if err != nil {
			fail(fmt.Errorf("benchmark group %s: %w", name, err))
		}
	}
}

// report prints one figure.
func report(name string, value float64, unit string) {
	fmt.Printf("BENCH %s %s %s\n", name, trim(value), unit)
}

func trim(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
