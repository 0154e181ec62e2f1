package docs

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// Reference pages, relative to the repository root.
const (
	flagsPage      = "docs/reference/flags.md"
	metricsPage    = "docs/reference/metrics.md"
	eventsPage     = "docs/reference/events.md"
	conditionsPage = "docs/reference/conditions.md"
	designPage     = "docs/design.md"
)

// where maps an item (a flag, a metric, a reason) to where it is defined
// or documented ("file:line"), for the messages.
type where map[string]string

// compareSets reports, all at once, the items the code has and the page
// lacks and the items the page has and the code lacks.
func compareSets(t *testing.T, page string, code, docs where) {
	t.Helper()
	t.Logf("%s: %d in the code, %d in the docs", page, len(code), len(docs))
	var missing, extra []string
	for k, at := range code {
		if _, ok := docs[k]; !ok {
			missing = append(missing, fmt.Sprintf("  %s (defined at %s)", k, at))
		}
	}
	for k, at := range docs {
		if _, ok := code[k]; !ok {
			extra = append(extra, fmt.Sprintf("  %s (%s)", k, at))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("%s lacks %d item(s) the code defines: add a row to %s for each:\n%s", page, len(missing), page, strings.Join(missing, "\n"))
	}
	if len(extra) > 0 {
		t.Errorf("%s lists %d item(s) the code does not define: remove (or rename) each row in %s:\n%s", page, len(extra), page, strings.Join(extra, "\n"))
	}
	if len(code) == 0 {
		t.Errorf("found nothing in the code for %s: the test's reading of the code is broken", page)
	}
}

// rowsOf returns the page's rows that name an item, keyed by key(row).
func rowsOf(md *mdFile, key func(mdRow) (string, bool)) where {
	w := where{}
	for _, r := range md.rows {
		if r.name == "" {
			continue
		}
		if k, ok := key(r); ok {
			w[k] = fmt.Sprintf("%s:%d", md.rel, r.line)
		}
	}
	return w
}

func byName(r mdRow) (string, bool) { return r.name, true }

// firstCodeAll returns every code span of s.
func firstCodeAll(s string) []string {
	var out []string
	for _, m := range firstCode.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}
