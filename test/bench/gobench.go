package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// benchLine matches `go test -bench -benchmem` result lines.
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

// summarizeGoBench prints the median of every metric of every benchmark in
// a `go test -bench` output file, e.g.
//
//	BENCH ipam_allocaterelease_v4_slash16_50k_allocated 812 ns/op
func summarizeGoBench(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type key struct{ name, unit string }
	values := map[key][]float64{}
	var order []key
	pkg := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p[strings.LastIndex(p, "/")+1:]
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := pkg + "_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(m[1]))
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			k := key{name, fields[i+1]}
			if _, seen := values[k]; !seen {
				order = append(order, k)
			}
			values[k] = append(values[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return fmt.Errorf("no benchmark results in %s", path)
	}
	for _, k := range order {
		suffix := map[string]string{"ns/op": "", "B/op": "_bytes", "allocs/op": "_allocs"}[k.unit]
		if !slices.Contains([]string{"ns/op", "B/op", "allocs/op"}, k.unit) {
			suffix = "_" + strings.NewReplacer("/", "_per_").Replace(k.unit)
		}
		report(k.name+suffix, median(values[k]), k.unit)
	}
	return nil
}
