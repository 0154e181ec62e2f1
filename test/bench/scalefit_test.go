package main

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

// TestFitGrowth: exponents along nodes and along Services from BENCH lines
// made from known laws (x^1, x^2, constant), at the points make scale runs.
func TestFitGrowth(t *testing.T) {
	var lines []string
	for _, p := range [][2]int{{100, 1000}, {300, 1000}, {1000, 1000}, {100, 3000}, {100, 10000}} {
		n, s := float64(p[0]), float64(p[1])
		add := func(fig string, v float64) {
			lines = append(lines, "BENCH scale_"+itoa(p[0])+"n_"+itoa(p[1])+"s_"+fig+" "+ftoa(v)+" unit")
		}
		add("linear_in_nodes", 3*n)
		add("square_in_services", s*s/1e4)
		add("flat", 42)
		add("zero_somewhere", n-100)
	}
	lines = append(lines, "BENCH services_1000_all_assigned_defaults_s 0.3 s", "not a bench line")
	figures, err := readScale(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, g := range fitGrowth(figures) {
		got[g.figure+" "+g.along+" at "+itoa(g.fixed)] = g.exponent
	}
	want := map[string]float64{
		"linear_in_nodes nodes at 1000":      1,
		"linear_in_nodes services at 100":    0,
		"square_in_services nodes at 1000":   0,
		"square_in_services services at 100": 2,
		"flat nodes at 1000":                 0,
		"flat services at 100":               0,
	}
	if len(got) != len(want) {
		t.Errorf("fitted %v, want exactly %v", got, want)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || math.Abs(g-w) > 1e-9 {
			t.Errorf("%s: exponent %v (fitted: %v), want %v", k, g, ok, w)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
