package docs

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ironlb/ironlb/test/binaries"
)

// designSections are the headings of docs/design.md whose tables list the
// module's packages, one row each: | `loadbalancer/planner` | role |.
var designSections = []string{"Packages", "Test and rig packages"}

// TestPackages: docs/design.md's package tables list exactly the packages
// `go list ./...` finds (folders relative to the root; the root as ".").
func TestPackages(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = m.root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	code := where{}
	for _, ip := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(ip, binaries.Module), "/")
		if rel == "" {
			rel = "."
		}
		code[rel] = "go list ./..."
	}
	page := d.page(t, designPage)
	docs := rowsOf(page, func(r mdRow) (string, bool) {
		if !slices.Contains(designSections, r.h2) {
			return "", false
		}
		return strings.TrimSuffix(strings.TrimPrefix(r.name, "./"), "/"), true
	})
	for _, s := range designSections {
		if !page.anchors[slug(s)] {
			t.Errorf("%s has no heading \"## %s\": its package tables go there", page.rel, s)
		}
	}
	compareSets(t, page.rel+" (## "+strings.Join(designSections, ", ## ")+")", code, docs)
}
