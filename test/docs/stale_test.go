package docs

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// allDocs stands for README.md and every docs/**/*.md in staleStatements.
const allDocs = "README.md, docs/"

// staleStatements were true once and are not (issue 26); they must not
// come back. Text is compared with whitespace collapsed and backticks
// dropped, so a line break or code markup does not hide a phrase.
var staleStatements = []struct {
	file, phrase, why string
}{
	// The placement of VIPs moved to loadbalancer/planner; the file is gone.
	{allDocs, "loadbalancer/announce.go", "announce.go no longer exists: which node announces a VIP is loadbalancer/planner's"},
	// BFD's shipped default is 300 ms × 3: detection in about 0.9 s.
	{allDocs, "a third of a second", "BFD's default (300 ms × 3) detects a failure in about 0.9 s"},
	// api/v1alpha1 holds BGPPeer as well.
	{allDocs, "the IPPool API", "api/v1alpha1 is IronLB's API: IPPool and BGPPeer"},
	// The ironlb.dev/announced-by annotation was replaced by the
	// ironlb.dev/Announced status condition.
	{"loadbalancer/planner/seed.go", "announced-by", "the annotation is retired: the record is the ironlb.dev/Announced condition"},
	{"test/bench/services.go", "announced-by", "the annotation is retired: the record is the ironlb.dev/Announced condition"},
	// Health's comment once said its check waits for the EndpointSlice
	// cache too; Check waits for nothing and Balancer.Ready never covered
	// EndpointSlices.
	{"provider/cloud.go", "EndpointSlice and IPPool caches synced", "provider.Health.Check answers at once from Balancer.Ready (Service, Namespace, Node and IPPool caches, allocations restored)"},
}

var goFileRE = regexp.MustCompile("`([A-Za-z0-9_./-]+\\.go)`")

// TestStale: the statements of staleStatements are gone, and every Go
// file a page names in backticks exists.
func TestStale(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	norm := func(s string) string { return spacesRE.ReplaceAllString(strings.ReplaceAll(s, "`", ""), " ") }
	for _, s := range staleStatements {
		t.Run(s.file+": "+s.phrase, func(t *testing.T) {
			texts := map[string]string{}
			if s.file == allDocs {
				for _, md := range d.sorted() {
					texts[md.rel] = md.text
				}
			} else {
				b, err := os.ReadFile(filepath.Join(m.root, filepath.FromSlash(s.file)))
				if err != nil {
					return // gone, with the statement
				}
				texts[s.file] = string(b)
			}
			var found []string
			for name, text := range texts {
				if strings.Contains(strings.ToLower(norm(text)), strings.ToLower(s.phrase)) {
					found = append(found, name)
				}
			}
			sort.Strings(found)
			if len(found) > 0 {
				t.Errorf("%q is back in %s: edit it out (%s)", s.phrase, strings.Join(found, ", "), s.why)
			}
		})
	}
	t.Run("named Go files exist", func(t *testing.T) {
		files := map[string]bool{} // every .go file of the module, and each base name
		err := filepath.WalkDir(m.root, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && strings.HasPrefix(e.Name(), ".") && p != m.root {
				return filepath.SkipDir
			}
			if !e.IsDir() && strings.HasSuffix(p, ".go") {
				rel, _ := filepath.Rel(m.root, p)
				files[filepath.ToSlash(rel)] = true
				files[path.Base(filepath.ToSlash(rel))] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for _, md := range d.sorted() {
			for i, line := range strings.Split(md.text, "\n") {
				for _, g := range goFileRE.FindAllStringSubmatch(line, -1) {
					name := g[1]
					ok := files[name] || files[path.Join(path.Dir(md.rel), name)]
					if !ok && strings.Contains(name, "/") { // a path below a package: planner/seed.go
						for f := range files {
							if strings.HasSuffix(f, "/"+name) {
								ok = true
								break
							}
						}
					}
					if !ok {
						bad = append(bad, fmt.Sprintf("%s:%d: %s", md.rel, i+1, name))
					}
				}
			}
		}
		if len(bad) > 0 {
			t.Errorf("pages name Go files that do not exist (rename or drop them):\n  %s", strings.Join(bad, "\n  "))
		}
	})
}
