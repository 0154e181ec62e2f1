package docs

import (
	"fmt"
	"go/ast"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// metric is what metrics.md says of a metric besides its meaning.
type metric struct {
	Type, Binary string
	Labels       []string
}

// metricBinary is the program whose /metrics serves the metrics of a
// package: the speaker's packages, the control-plane speaker's (cpvip),
// else the CCM.
func metricBinary(dir string) string {
	switch {
	case dir == "speaker" || strings.HasPrefix(dir, "speaker/"):
		return "ironlb-speaker"
	case dir == "cpvip":
		return "ironlb-speaker control-plane"
	}
	return "ironlb-ccm"
}

var metricsPkgs = map[string]bool{"k8s.io/component-base/metrics": true, "github.com/prometheus/client_golang/prometheus": true}

var constructorRE = regexp.MustCompile(`^New(Counter|Gauge|Histogram|Summary|TimingHistogram)(Vec)?$`)

// codeMetrics reads every metric the module's non-test code builds: the
// Opts literals handed to metrics.NewCounter/NewGaugeVec/... (Namespace,
// Subsystem and Name joined by "_") and the metrics.NewDesc descriptors of
// the scrape-time collectors (gauges: the code emits them with GaugeValue).
func codeMetrics(m *module) (map[string]metric, where, []string) {
	got, at := map[string]metric{}, where{}
	var errs []string
	labelsOf := func(f *goFile, e ast.Expr) []string {
		lit, ok := e.(*ast.CompositeLit)
		if !ok {
			if id, ok := e.(*ast.Ident); !ok || id.Name != "nil" {
				errs = append(errs, fmt.Sprintf("%s: labels not a []string literal: TestMetrics cannot read them", m.pos(e)))
			}
			return []string{}
		}
		ls := []string{}
		for _, el := range lit.Elts {
			s, err := m.str(f, el)
			if err != nil {
				errs = append(errs, err.Error())
			}
			ls = append(ls, s)
		}
		return ls
	}
	for _, pkg := range m.sortedPackages() {
		for _, f := range pkg.files {
			ast.Inspect(f.ast, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, ok := sel.X.(*ast.Ident)
				if !ok || !metricsPkgs[f.imports[x.Name]] {
					return true
				}
				if sel.Sel.Name == "CounterValue" {
					errs = append(errs, fmt.Sprintf("%s: a descriptor emitted as a counter: TestMetrics takes every NewDesc for a gauge; teach it", m.pos(call)))
				}
				if sel.Sel.Name == "NewDesc" && len(call.Args) >= 3 {
					name, err := m.str(f, call.Args[0])
					if err != nil {
						errs = append(errs, err.Error())
						return true
					}
					got[name] = metric{Type: "gauge", Binary: metricBinary(pkg.dir), Labels: labelsOf(f, call.Args[2])}
					at[name] = m.pos(call)
					return true
				}
				mm := constructorRE.FindStringSubmatch(sel.Sel.Name)
				if mm == nil || len(call.Args) == 0 {
					return true
				}
				arg := call.Args[0]
				if u, ok := arg.(*ast.UnaryExpr); ok {
					arg = u.X
				}
				lit, ok := arg.(*ast.CompositeLit)
				if !ok {
					errs = append(errs, fmt.Sprintf("%s: %s's options are not a literal: TestMetrics cannot read the metric's name", m.pos(call), sel.Sel.Name))
					return true
				}
				var parts []string
				for _, field := range []string{"Namespace", "Subsystem", "Name"} {
					for _, el := range lit.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok || kv.Key.(*ast.Ident).Name != field {
							continue
						}
						s, err := m.str(f, kv.Value)
						if err != nil {
							errs = append(errs, err.Error())
						}
						if s != "" {
							parts = append(parts, s)
						}
					}
				}
				name := strings.Join(parts, "_")
				labels := []string{}
				if mm[2] == "Vec" && len(call.Args) > 1 {
					labels = labelsOf(f, call.Args[1])
				}
				typ := strings.ToLower(mm[1])
				if typ == "timinghistogram" {
					typ = "histogram"
				}
				got[name] = metric{Type: typ, Binary: metricBinary(pkg.dir), Labels: labels}
				at[name] = m.pos(call)
				return true
			})
		}
	}
	return got, at, errs
}

// TestMetrics: docs/reference/metrics.md has a row for every metric the
// code registers, with its type, labels and binary, and no other.
func TestMetrics(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	code, at, errs := codeMetrics(m)
	if len(errs) > 0 {
		t.Fatalf("reading the metrics from the code:\n  %s", strings.Join(errs, "\n  "))
	}
	page := d.page(t, metricsPage)
	docs := map[string]metric{}
	docsAt := rowsOf(page, func(r mdRow) (string, bool) {
		if !strings.HasPrefix(r.name, "ironlb_") {
			return "", false
		}
		cell := func(i int) string {
			if i < len(r.cells) {
				return r.cells[i]
			}
			return ""
		}
		labels := append([]string{}, firstCodeAll(cell(2))...)
		docs[r.name] = metric{Type: strings.Trim(cell(1), "` "), Labels: labels, Binary: strings.Trim(cell(3), "` ")}
		return r.name, true
	})
	t.Run("names", func(t *testing.T) { compareSets(t, page.rel, at, docsAt) })
	t.Run("type, labels, binary", func(t *testing.T) {
		want, got := map[string]metric{}, map[string]metric{}
		for name, mt := range code {
			if g, ok := docs[name]; ok {
				want[name], got[name] = mt, g
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: the Type, Labels or Binary column disagrees with the code; fix the rows in %s (-code +docs):\n%s", page.rel, page.rel, diff)
		}
	})
}
