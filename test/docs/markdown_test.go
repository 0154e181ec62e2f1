package docs

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"
)

// mdFile is a Markdown page: its headings' anchors, its links and its
// table rows, outside fenced code blocks.
type mdFile struct {
	rel     string          // slash-separated, relative to the root
	text    string          // the whole file
	prose   string          // the file without fenced code blocks, whitespace collapsed
	anchors map[string]bool // GitHub's heading anchors, and <a name/id> targets
	links   []mdLink
	rows    []mdRow
}

type mdLink struct {
	line   int
	target string
}

// mdRow is a table row (not a header or separator row).
type mdRow struct {
	line  int
	h2    string   // the "## " heading above it, without backticks
	cells []string // trimmed
	name  string   // the first `code span` of the first cell
}

var (
	headingRE  = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	codeSpanRE = regexp.MustCompile("(`+)[^`]*?(`+)")
	linkRE     = regexp.MustCompile(`\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	refDefRE   = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	htmlRefRE  = regexp.MustCompile(`(?:href|src)="([^"]*)"`)
	htmlIDRE   = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	mdLinkRE   = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	htmlTagRE  = regexp.MustCompile(`<[^>]+>`)
	sepCellRE  = regexp.MustCompile(`^:?-{3,}:?$`)
	firstCode  = regexp.MustCompile("`([^`]+)`")
	spacesRE   = regexp.MustCompile(`\s+`)
)

// slug is GitHub's anchor of a heading's text: the rendered text (no
// markup, links reduced to their text) in lower case, every character that
// is not a letter, a digit, a space, "-" or "_" dropped, each space turned
// into "-".
func slug(heading string) string {
	s := htmlTagRE.ReplaceAllString(heading, "")
	s = mdLinkRE.ReplaceAllString(s, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// parseMarkdown reads root/rel.
func parseMarkdown(root, rel string) (*mdFile, error) {
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	md := &mdFile{rel: rel, text: string(b), anchors: map[string]bool{}}
	seen := map[string]int{}
	var fence string // the open fence ("```" or "~~~"), "" outside one
	var h2 string
	inTable := false
	var prose []string
	for i, line := range strings.Split(md.text, "\n") {
		n := i + 1
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			inTable = false
			continue
		}
		prose = append(prose, line)
		if m := headingRE.FindStringSubmatch(line); m != nil {
			s := slug(m[2])
			if k := seen[s]; k > 0 {
				md.anchors[fmt.Sprintf("%s-%d", s, k)] = true
			} else {
				md.anchors[s] = true
			}
			seen[s]++
			switch len(m[1]) {
			case 1:
				h2 = ""
			case 2:
				h2 = strings.ReplaceAll(m[2], "`", "")
			}
			inTable = false
			continue
		}
		for _, id := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			md.anchors[id[1]] = true
		}
		noCode := codeSpanRE.ReplaceAllString(line, "")
		for _, re := range []*regexp.Regexp{linkRE, refDefRE, htmlRefRE} {
			for _, l := range re.FindAllStringSubmatch(noCode, -1) {
				md.links = append(md.links, mdLink{line: n, target: l[1]})
			}
		}
		if !strings.HasPrefix(trimmed, "|") {
			inTable = false
			continue
		}
		cells := splitRow(trimmed)
		if !inTable { // the header row
			inTable = true
			continue
		}
		if isSeparator(cells) {
			continue
		}
		r := mdRow{line: n, h2: h2, cells: cells}
		if len(cells) > 0 {
			if m := firstCode.FindStringSubmatch(cells[0]); m != nil {
				r.name = m[1]
			}
		}
		md.rows = append(md.rows, r)
	}
	md.prose = spacesRE.ReplaceAllString(strings.Join(prose, "\n"), " ")
	return md, nil
}

// splitRow splits a table row on the "|" outside code spans and not
// escaped.
func splitRow(line string) []string {
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	inCode := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case c == '`':
			inCode = !inCode
			cur.WriteByte(c)
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if !sepCellRE.MatchString(strings.ReplaceAll(c, " ", "")) {
			return false
		}
	}
	return len(cells) > 0
}

// docs is README.md and every docs/**/*.md, parsed once per test.
type docSet struct {
	root  string
	files map[string]*mdFile // by relative path
}

func (d *docSet) sorted() []*mdFile {
	names := make([]string, 0, len(d.files))
	for n := range d.files {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*mdFile, len(names))
	for i, n := range names {
		out[i] = d.files[n]
	}
	return out
}

func loadDocs(t *testing.T) *docSet {
	t.Helper()
	m := loadModule(t)
	d := &docSet{root: m.root, files: map[string]*mdFile{}}
	rels := []string{"README.md"}
	docsDir := filepath.Join(m.root, "docs")
	if _, err := os.Stat(docsDir); err == nil {
		err := filepath.WalkDir(docsDir, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(p, ".md") {
				return err
			}
			rel, _ := filepath.Rel(m.root, p)
			rels = append(rels, filepath.ToSlash(rel))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range rels {
		md, err := parseMarkdown(m.root, rel)
		if err != nil {
			t.Fatalf("reading %s: %v", rel, err)
		}
		d.files[rel] = md
	}
	return d
}

// page returns the parsed page rel, or fails the test naming it.
func (d *docSet) page(t *testing.T, rel string) *mdFile {
	t.Helper()
	md := d.files[rel]
	if md == nil {
		t.Fatalf("%s is missing: create it (issue 26: the reference tables)", rel)
	}
	return md
}

// resolve returns the repository path a link in from points to, and
// whether it is a relative link at all.
func resolveLink(from, target string) (file, anchor string, relative bool) {
	if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") || strings.HasPrefix(target, "//") {
		return "", "", false
	}
	file, anchor, _ = strings.Cut(target, "#")
	if file == "" {
		return from, anchor, true
	}
	if i := strings.IndexByte(file, '?'); i >= 0 {
		file = file[:i]
	}
	if u, err := url.PathUnescape(file); err == nil {
		file = u
	}
	if strings.HasPrefix(file, "/") { // GitHub: relative to the repository root
		return path.Clean(strings.TrimPrefix(file, "/")), anchor, true
	}
	return path.Join(path.Dir(from), file), anchor, true
}
