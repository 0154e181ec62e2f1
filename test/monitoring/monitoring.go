// Package monitoring reads IronLB's alerts (deploy/monitoring/prometheusrule.yaml,
// a PrometheusRule of the Prometheus Operator) and Grafana dashboard
// (deploy/monitoring/ironlb-dashboard.json) from the source tree, and
// gives the tests what they need to check them: the rule groups in plain
// Prometheus format for promtool, every PromQL expression of both, and the
// metric names an expression reads. It lives outside deploy/, which holds
// only manifests, so it cannot embed them: it finds them through the
// module's root above the working directory (see Dir).
package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/test/binaries"
)

// Dir returns deploy/monitoring of the source tree: below the go.mod of
// github.com/ironlb/ironlb above the working directory (a test's is its
// package's folder).
func Dir() (string, error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("locating deploy/monitoring: %w", err)
	}
	return filepath.Join(root, "deploy", "monitoring"), nil
}

// readFile returns the file called name in deploy/monitoring.
func readFile(name string) ([]byte, error) {
	dir, err := Dir()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("reading the monitoring manifest: %w", err)
	}
	return b, nil
}

// RuleFile returns the PrometheusRule manifest,
// deploy/monitoring/prometheusrule.yaml.
func RuleFile() ([]byte, error) { return readFile("prometheusrule.yaml") }

// DashboardFile returns the Grafana dashboard,
// deploy/monitoring/ironlb-dashboard.json.
func DashboardFile() ([]byte, error) { return readFile("ironlb-dashboard.json") }

// RuleGroups returns the PrometheusRule's spec: rule groups in the format
// of a Prometheus rule file (what promtool reads).
func RuleGroups() ([]byte, error) {
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       map[string]any `json:"spec"`
	}
	rule, err := RuleFile()
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(rule, &pr); err != nil {
		return nil, fmt.Errorf("prometheusrule.yaml: %w", err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("prometheusrule.yaml is a %s %s, want a monitoring.coreos.com/v1 PrometheusRule", pr.APIVersion, pr.Kind)
	}
	return yaml.Marshal(pr.Spec)
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Rules returns every rule of the PrometheusRule.
func Rules() ([]Rule, error) {
	var pr struct {
		Spec struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []Rule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	rule, err := RuleFile()
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(rule, &pr); err != nil {
		return nil, fmt.Errorf("prometheusrule.yaml: %w", err)
	}
	var out []Rule
	for _, g := range pr.Spec.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// Dashboard is the part of a Grafana dashboard the tests look at.
type Dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is one panel of the dashboard (rows included).
type Panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *Datasource     `json:"datasource"`
	GridPos    *map[string]int `json:"gridPos"`
	Targets    []Target        `json:"targets"`
	Panels     []Panel         `json:"panels"`
}

// Datasource is a panel's or target's data source.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *Datasource `json:"datasource"`
}

// LoadDashboard parses the dashboard.
func LoadDashboard() (*Dashboard, error) {
	data, err := DashboardFile()
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("ironlb-dashboard.json: %w", err)
	}
	return &d, nil
}

// AllPanels returns the dashboard's panels, those of collapsed rows too.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Query is one PromQL expression and where it comes from.
type Query struct {
	Source string // "alert IronLBX" or `panel 3 "Title" A`
	Expr   string // as written (a dashboard's with Grafana variables)
}

// PromQL is the expression with Grafana's interval variables replaced, so
// that Prometheus can parse it.
func (q Query) PromQL() string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h").Replace(q.Expr)
}

// Queries returns every expression of the rules and of the dashboard.
func Queries() ([]Query, error) {
	rules, err := Rules()
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, r := range rules {
		out = append(out, Query{Source: "alert " + r.Alert + r.Record, Expr: r.Expr})
	}
	d, err := LoadDashboard()
	if err != nil {
		return nil, err
	}
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			out = append(out, Query{Source: fmt.Sprintf("panel %d %q %s", p.ID, p.Title, t.RefID), Expr: t.Expr})
		}
	}
	return out, nil
}

// promqlWords are PromQL's keywords, aggregation modifiers and
// aggregations: identifiers that are not metric names even when not
// followed by "(".
var promqlWords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "atan2": true,
	"inf": true, "nan": true,
	// Aggregations, which may be followed by a modifier before "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// labelLists are the words followed by a parenthesized list of label names.
var labelLists = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// MetricNames returns the metric names expr selects, sorted and without
// repeats. It is a small PromQL lexer, not a parser (the module of
// Prometheus' parser would upgrade some 30 modules IronLB's binaries are
// built with): it skips strings, label matchers ({...}), ranges and
// subqueries ([...]), numbers and durations, Grafana variables ($x) and
// the label lists of by/without/on/ignoring/group_left/group_right; an
// identifier followed by "(" is a function or aggregation; what remains,
// but for keywords, is a metric name. A selector written only as
// {__name__="x"} is refused, as are unbalanced brackets. promtool checks
// that the expressions parse (TestMonitoringPromtool).
func MetricNames(expr string) ([]string, error) {
	names := map[string]bool{}
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r') {
			j++
		}
		return j
	}
	// closing returns the index after the bracket closing the one at j,
	// skipping strings.
	closing := func(j int) (int, error) {
		open, shut := s[j], map[byte]byte{'(': ')', '{': '}', '[': ']'}[s[j]]
		depth := 0
		for k := j; k < len(s); k++ {
			switch c := s[k]; c {
			case '"', '\'', '`':
				end, err := stringEnd(s, k)
				if err != nil {
					return 0, err
				}
				k = end - 1
			case open:
				depth++
			case shut:
				depth--
				if depth == 0 {
					return k + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %q in %q", open, expr)
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := stringEnd(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, err := closing(i)
			if err != nil {
				return nil, err
			}
			if strings.Contains(s[i:end], "__name__") {
				return nil, fmt.Errorf("%q: select metrics by name, not with __name__", expr)
			}
			i = end
		case c == '[':
			end, err := closing(i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '$': // a Grafana variable
			i++
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.': // numbers, durations (5m), 0x1f, 1e3
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(j)
			lower := strings.ToLower(word)
			switch {
			case labelLists[lower] && next < len(s) && s[next] == '(':
				end, err := closing(next)
				if err != nil {
					return nil, err
				}
				j = end
			case next < len(s) && s[next] == '(':
				// a function or an aggregation
			case promqlWords[lower]:
			default:
				names[word] = true
			}
			i = j
		default:
			i++
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// stringEnd returns the index after the PromQL string literal starting at
// i ("..." and '...' with backslash escapes, `...` raw).
func stringEnd(s string, i int) (int, error) {
	q := s[i]
	for k := i + 1; k < len(s); k++ {
		switch {
		case s[k] == '\\' && q != '`':
			k++
		case s[k] == q:
			return k + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string in %q", s)
}
