package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestLinks: every relative link of README.md and docs/**/*.md leads to a
// file of the repository, and every #anchor to a heading of the page.
func TestLinks(t *testing.T) {
	d := loadDocs(t)
	for _, md := range d.sorted() {
		t.Run(md.rel, func(t *testing.T) {
			var bad []string
			for _, l := range md.links {
				file, anchor, rel := resolveLink(md.rel, l.target)
				if !rel {
					continue
				}
				if strings.HasPrefix(file, "../") || file == ".." {
					bad = append(bad, fmt.Sprintf("%s:%d: %s leads outside the repository", md.rel, l.line, l.target))
					continue
				}
				if _, err := os.Stat(filepath.Join(d.root, filepath.FromSlash(file))); err != nil {
					bad = append(bad, fmt.Sprintf("%s:%d: %s: no file %s", md.rel, l.line, l.target, file))
					continue
				}
				if anchor == "" || !strings.HasSuffix(file, ".md") {
					continue
				}
				target := d.files[file]
				if target == nil {
					var err error
					if target, err = parseMarkdown(d.root, file); err != nil {
						bad = append(bad, fmt.Sprintf("%s:%d: %s: %v", md.rel, l.line, l.target, err))
						continue
					}
				}
				if !target.anchors[anchor] {
					bad = append(bad, fmt.Sprintf("%s:%d: %s: %s has no heading with the anchor #%s%s", md.rel, l.line, l.target, file, anchor, nearAnchors(target, anchor)))
				}
			}
			if len(bad) > 0 {
				t.Errorf("broken links in %s (fix the link, or the heading it points to):\n  %s", md.rel, strings.Join(bad, "\n  "))
			}
		})
	}
}

// nearAnchors suggests the page's anchors that share a word with a.
func nearAnchors(md *mdFile, a string) string {
	var near []string
	for x := range md.anchors {
		for _, w := range strings.Split(a, "-") {
			if len(w) > 3 && strings.Contains(x, w) {
				near = append(near, "#"+x)
				break
			}
		}
	}
	if len(near) == 0 {
		return ""
	}
	sort.Strings(near)
	if len(near) > 5 {
		near = near[:5]
	}
	return " (its anchors include " + strings.Join(near, ", ") + ")"
}
