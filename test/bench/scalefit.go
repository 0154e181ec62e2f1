package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
)

// scalePoint is one scale figure at one point of the grid.
type scalePoint struct {
	nodes, services int
	value           float64
}

// scaleLine is a BENCH line of the scale group:
// "BENCH scale_<nodes>n_<services>s_<figure> <value> <unit>".
var scaleLine = regexp.MustCompile(`^BENCH scale_(\d+)n_(\d+)s_(\S+) (\S+) `)

// readScale gathers the scale group's figures from BENCH lines, by figure.
func readScale(r io.Reader) (map[string][]scalePoint, error) {
	out := map[string][]scalePoint{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := scaleLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		s, _ := strconv.Atoi(m[2])
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", sc.Text(), err)
		}
		out[m[3]] = append(out[m[3]], scalePoint{nodes: n, services: s, value: v})
	}
	return out, sc.Err()
}

// growth is how a figure grows with one dimension: value ∝ x^exponent,
// fitted (least squares on logarithms) over points that differ only in x.
type growth struct {
	figure, along string // along: "nodes" or "services"
	exponent      float64
	fixed         int // the other dimension's value
	points        int
}

// fitGrowth fits, for every figure, the exponent along nodes (at each
// Service count measured at two or more node counts) and along Services
// (likewise). Figures with a zero or negative value somewhere (a count
// that is 0) have no meaningful exponent and are skipped.
func fitGrowth(figures map[string][]scalePoint) []growth {
	var out []growth
	for _, name := range slices.Sorted(maps.Keys(figures)) {
		pts := figures[name]
		if slices.ContainsFunc(pts, func(p scalePoint) bool { return p.value <= 0 }) {
			continue
		}
		for _, along := range []string{"nodes", "services"} {
			groups := map[int][]scalePoint{}
			for _, p := range pts {
				fixed := p.services
				if along == "services" {
					fixed = p.nodes
				}
				groups[fixed] = append(groups[fixed], p)
			}
			for _, fixed := range slices.Sorted(maps.Keys(groups)) {
				g := groups[fixed]
				xs, ys := make([]float64, len(g)), make([]float64, len(g))
				for i, p := range g {
					x := p.nodes
					if along == "services" {
						x = p.services
					}
					xs[i], ys[i] = math.Log(float64(x)), math.Log(p.value)
				}
				if b, ok := slope(xs, ys); ok {
					out = append(out, growth{figure: name, along: along, exponent: b, fixed: fixed, points: len(g)})
				}
			}
		}
	}
	return out
}

// slope is the least-squares slope of ys over xs; false with fewer than
// two distinct xs.
func slope(xs, ys []float64) (float64, bool) {
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(xs))
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx < 1e-12 {
		return 0, false
	}
	return sxy / sxx, true
}

// reportGrowth prints the fitted exponents of the scale figures in r as
// BENCH lines, "scale_growth_<figure>_<along>_at_<fixed> <exponent>".
func reportGrowth(r io.Reader) error {
	figures, err := readScale(r)
	if err != nil {
		return err
	}
	for _, g := range fitGrowth(figures) {
		other := "n"
		if g.along == "nodes" {
			other = "s"
		}
		report(fmt.Sprintf("scale_growth_%s_%s_at_%d%s", g.figure, g.along, g.fixed, other), math.Round(g.exponent*100)/100, "exponent")
	}
	return nil
}
