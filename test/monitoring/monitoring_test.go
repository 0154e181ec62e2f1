package monitoring

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtool returns Prometheus' promtool: $IRONLB_TOOLS_BIN/promtool or
// <repo>/.cache/bin/promtool (make promtool puts Debian's there), else one
// in PATH. Missing, the test fails (make test installs it) but under
// -short, where it is skipped.
func promtool(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("IRONLB_TOOLS_BIN")
	if dir == "" {
		dir = filepath.Join("..", "..", ".cache", "bin")
	}
	if p, err := filepath.Abs(filepath.Join(dir, "promtool")); err == nil && fileExists(p) {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if testing.Short() {
		t.Skip("promtool missing (make promtool)")
	}
	t.Fatal("promtool missing: run `make promtool` (Debian's prometheus package, unpacked into .cache/bin)")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestMonitoringPromtool: promtool accepts the PrometheusRule's rule groups
// and the dashboard's queries (as recording rules), and the alerts' unit
// tests (testdata/alerts_test.yaml) pass: each alert fires on the series
// that should fire it, naming the object, and not on healthy ones.
func TestMonitoringPromtool(t *testing.T) {
	dir := t.TempDir()
	groups, err := RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ironlb-rules.yaml"), groups, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("promtool check rules:\n%s", runPromtool(t, dir, "check", "rules", "ironlb-rules.yaml"))

	// The unit tests compare every annotation: they run on the rules
	// without the long ones.
	var spec struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(groups, &spec); err != nil {
		t.Fatal(err)
	}
	for _, g := range spec.Groups {
		for i := range g.Rules {
			delete(g.Rules[i].Annotations, "description")
			delete(g.Rules[i].Annotations, "runbook_url")
		}
	}
	short, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), short, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("promtool test rules:\n%s", runPromtool(t, dir, "test", "rules", "alerts_test.yaml"))

	// Every alert has a unit test.
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Alert != "" && !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
			t.Errorf("alert %s has no test in testdata/alerts_test.yaml", r.Alert)
		}
	}

	d, err := LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	var rec strings.Builder
	rec.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range d.AllPanels() {
		for _, tg := range p.Targets {
			q := Query{Expr: tg.Expr}
			fmt.Fprintf(&rec, "      - record: dashboard:panel_%d_%s\n        expr: %q\n", p.ID, tg.RefID, q.PromQL())
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "dashboard-queries.yaml"), []byte(rec.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("promtool check rules (dashboard queries):\n%s", runPromtool(t, dir, "check", "rules", "dashboard-queries.yaml"))
}

// TestMonitoringRules: every alert has a severity, a for duration, a
// summary, a description and a runbook pointing at docs/troubleshooting.md.
func TestMonitoringRules(t *testing.T) {
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join("..", "..", "docs", "troubleshooting.md"))
	if err != nil {
		t.Fatalf("the runbooks' page: %v", err)
	}
	if !bytes.HasPrefix(page, []byte("# Troubleshooting\n")) {
		t.Fatal("docs/troubleshooting.md does not start with its Troubleshooting heading")
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if seen[r.Alert] {
			t.Errorf("alert %s defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		if r.For == "" {
			t.Errorf("%s: no for duration", r.Alert)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if u := r.Annotations["runbook_url"]; u != "https://github.com/ironlb/ironlb/blob/main/docs/troubleshooting.md" {
			t.Errorf("%s: runbook_url %q, want docs/troubleshooting.md", r.Alert, u)
		}
		// An alert about one object names it.
		for _, l := range []string{"node", "peer", "pool"} {
			if strings.Contains(r.Expr, "by ("+l) || strings.Contains(r.Expr, ", "+l) {
				if !strings.Contains(r.Annotations["summary"], "$labels."+l) {
					t.Errorf("%s: grouped by %s, but its summary does not name it", r.Alert, l)
				}
			}
		}
	}
	for _, want := range []string{"IronLBSpeakerDisconnected", "IronLBVIPUnannounced", "IronLBPoolNearlyExhausted",
		"IronLBBGPSessionDown", "IronLBBFDFlapping", "IronLBCCMNotLeading"} {
		if !seen[want] {
			t.Errorf("alert %s missing", want)
		}
	}
}

// TestMonitoringDashboard: the dashboard is Grafana JSON as Grafana loads
// it: a uid and title, unique panel ids, and every panel but rows has a
// position, the Prometheus data source variable and queries with unique
// refIds.
func TestMonitoringDashboard(t *testing.T) {
	d, err := LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q", d.UID, d.Title)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("no datasource variable of type prometheus")
	}
	ids := map[int]string{}
	queries := 0
	for _, p := range d.AllPanels() {
		if other, ok := ids[p.ID]; ok || p.ID <= 0 {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || (*p.GridPos)["w"] <= 0 || (*p.GridPos)["h"] <= 0 {
			t.Errorf("panel %d %q: no gridPos", p.ID, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Type == "" {
			t.Errorf("panel %d: title %q type %q", p.ID, p.Title, p.Type)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: datasource %+v, want the prometheus ${datasource}", p.ID, p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q: no targets", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q: target %+v: empty or repeated refId, or no expr", p.ID, p.Title, tg)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %d %q: target %s datasource %+v", p.ID, p.Title, tg.RefID, tg.Datasource)
			}
			queries++
		}
	}
	if queries == 0 {
		t.Fatal("no queries")
	}
}

// TestMonitoringMetricNames: the lexer finds the metric names of tricky
// expressions, and every expression of the rules and the dashboard reads
// IronLB's metrics (or leader election's) only.
func TestMonitoringMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (le) (rate(a_bucket{x="by (b)", y=~"$node"}[$__rate_interval]))`:                    {"a_bucket"},
		`histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le, node))`:                           {"x_bucket"},
		`a / ignoring(state) b{state="total"} < 0.1 and on() (sum(increase(c[15m] offset 1h)) > 0)`: {"a", "b", "c"},
		`sum(x) or absent(y{name="l"})`:                                                             {"x", "y"},
		`max without (instance) (a:rec) * on (node) group_left(pod, job) info_metric`:               {"a:rec", "info_metric"},
		"count_values(\"v\", build) - topk(3, q) + 1e3 + 0x1f + Inf + 5 > bool 2 unless z[5m:1m]":   {"build", "q", "z"},
		`sum   by(node)(m)  # a comment with words`:                                                 {"m"},
		`'single \' quoted' + ` + "`raw ` + k":                                                      {"k"},
	} {
		got, err := MetricNames(expr)
		if err != nil {
			t.Errorf("MetricNames(%q): %v", expr, err)
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("MetricNames(%q) = %v, want %v", expr, got, want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `sum(x{a="b"`, `x{a="b}`} {
		if got, err := MetricNames(bad); err == nil {
			t.Errorf("MetricNames(%q) = %v, want an error", bad, got)
		}
	}

	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	ours := regexp.MustCompile(`^(ironlb_[a-z0-9_]+|leader_election_master_status)$`)
	for _, q := range qs {
		names, err := MetricNames(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Source, err)
		}
		if len(names) == 0 {
			t.Errorf("%s: %q reads no metric", q.Source, q.Expr)
		}
		for _, n := range names {
			if !ours.MatchString(n) {
				t.Errorf("%s reads %s, not a metric of IronLB or of its leader election", q.Source, n)
			}
		}
	}
}
