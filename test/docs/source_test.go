package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ironlb/ironlb/test/binaries"
)

// module is the module's non-test Go source, parsed once per test
// process, with a resolver of string constants across packages (and into
// dependencies, for constants such as Cluster API's condition reasons).
type module struct {
	root string
	fset *token.FileSet
	pkgs map[string]*goPackage // by folder relative to root, slash-separated ("." for the root)

	mu  sync.Mutex
	ext map[string]*goPackage // dependencies' packages by import path, parsed on first use
}

type goPackage struct {
	dir   string // relative folder, or the import path of a dependency
	path  string // import path
	files []*goFile
	// consts by name.
	consts map[string]*constDecl
}

type goFile struct {
	name    string // relative to the root, slash-separated
	ast     *ast.File
	imports map[string]string // local name → import path
	pkg     *goPackage
}

type constDecl struct {
	name, typ string // typ: the declared type's name ("" when untyped)
	expr      ast.Expr
	file      *goFile
}

var (
	loadOnce   sync.Once
	loadedMod  *module
	loadErr    error
	repoRootFn = binaries.RepoRoot
)

// loadModule parses every non-test .go file of the module (not the
// separate modules under test/tools, not testdata).
func loadModule(t *testing.T) *module {
	t.Helper()
	loadOnce.Do(func() {
		root, err := repoRootFn()
		if err != nil {
			loadErr = err
			return
		}
		m := &module{root: root, fset: token.NewFileSet(), pkgs: map[string]*goPackage{}, ext: map[string]*goPackage{}}
		loadErr = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				name := d.Name()
				if rel != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor" || name == "node_modules") {
					return filepath.SkipDir
				}
				if rel != "." {
					if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
						return filepath.SkipDir // another module
					}
				}
				return nil
			}
			if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(m.fset, p, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			dir := path.Dir(rel)
			pkg := m.pkgs[dir]
			if pkg == nil {
				ip := binaries.Module
				if dir != "." {
					ip += "/" + dir
				}
				pkg = &goPackage{dir: dir, path: ip, consts: map[string]*constDecl{}}
				m.pkgs[dir] = pkg
			}
			pkg.add(rel, f)
			return nil
		})
		loadedMod = m
	})
	if loadErr != nil {
		t.Fatalf("reading the module's Go files: %v", loadErr)
	}
	return loadedMod
}

func (p *goPackage) add(name string, f *ast.File) {
	gf := &goFile{name: name, ast: f, imports: map[string]string{}, pkg: p}
	for _, im := range f.Imports {
		ip, _ := strconv.Unquote(im.Path.Value)
		local := importName(ip)
		if im.Name != nil {
			local = im.Name.Name
		}
		gf.imports[local] = ip
	}
	p.files = append(p.files, gf)
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if len(vs.Values) != len(vs.Names) {
				continue // iota and implicit repetition: not string constants
			}
			typ := ""
			switch tt := vs.Type.(type) {
			case *ast.Ident:
				typ = tt.Name
			case *ast.SelectorExpr:
				typ = tt.Sel.Name
			}
			for i, n := range vs.Names {
				p.consts[n.Name] = &constDecl{name: n.Name, typ: typ, expr: vs.Values[i], file: gf}
			}
		}
	}
}

// importName is the usual local name of an import path: its last element,
// without a major-version suffix (".v3") or a "go-" prefix.
func importName(ip string) string {
	base := path.Base(ip)
	if i := strings.Index(base, ".v"); i > 0 {
		base = base[:i]
	}
	return strings.TrimPrefix(base, "go-")
}

// sortedPackages returns the module's packages ordered by folder.
func (m *module) sortedPackages() []*goPackage {
	dirs := make([]string, 0, len(m.pkgs))
	for d := range m.pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	out := make([]*goPackage, len(dirs))
	for i, d := range dirs {
		out[i] = m.pkgs[d]
	}
	return out
}

// pos returns "file:line" of n, relative to the root.
func (m *module) pos(n ast.Node) string {
	p := m.fset.Position(n.Pos())
	rel, err := filepath.Rel(m.root, p.Filename)
	if err != nil {
		rel = p.Filename
	}
	return fmt.Sprintf("%s:%d", filepath.ToSlash(rel), p.Line)
}

// str resolves e, an expression in f, to a string constant: a literal, a
// constant of the package or of another (the module's or a dependency's),
// a concatenation or a conversion of those.
func (m *module) str(f *goFile, e ast.Expr) (string, error) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", fmt.Errorf("%s: %s is not a string", m.pos(e), e.Value)
		}
		return strconv.Unquote(e.Value)
	case *ast.ParenExpr:
		return m.str(f, e.X)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			break
		}
		a, err := m.str(f, e.X)
		if err != nil {
			return "", err
		}
		b, err := m.str(f, e.Y)
		return a + b, err
	case *ast.CallExpr: // a conversion: string(ReasonX), Reason("x")
		if len(e.Args) == 1 {
			return m.str(f, e.Args[0])
		}
	case *ast.Ident:
		if c := f.pkg.consts[e.Name]; c != nil {
			return m.str(c.file, c.expr)
		}
		return "", fmt.Errorf("%s: %s is not a constant of package %s", m.pos(e), e.Name, f.pkg.path)
	case *ast.SelectorExpr:
		x, ok := e.X.(*ast.Ident)
		if !ok {
			break
		}
		ip, ok := f.imports[x.Name]
		if !ok {
			break
		}
		pkg, err := m.pkg(ip)
		if err != nil {
			return "", fmt.Errorf("%s: %w", m.pos(e), err)
		}
		if c := pkg.consts[e.Sel.Name]; c != nil {
			return m.str(c.file, c.expr)
		}
		return "", fmt.Errorf("%s: %s.%s is not a constant of %s", m.pos(e), x.Name, e.Sel.Name, ip)
	}
	return "", fmt.Errorf("%s: cannot read a string constant from %T", m.pos(e), e)
}

// pkg returns the package of import path ip: the module's, or a
// dependency's parsed from its folder in the module cache.
func (m *module) pkg(ip string) (*goPackage, error) {
	if ip == binaries.Module {
		if p := m.pkgs["."]; p != nil {
			return p, nil
		}
	}
	if rel, ok := strings.CutPrefix(ip, binaries.Module+"/"); ok {
		if p := m.pkgs[rel]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("no package %s", ip)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.ext[ip]; p != nil {
		return p, nil
	}
	cmd := exec.Command("go", "list", "-f", "{{.Dir}}", ip)
	cmd.Dir = m.root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s: %v", ip, err)
	}
	dir := strings.TrimSpace(string(out))
	p := &goPackage{dir: ip, path: ip, consts: map[string]*constDecl{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(m.fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		p.add(ip+"/"+e.Name(), f)
	}
	m.ext[ip] = p
	return p, nil
}

// calleeName returns "pkgpath.Func" for a call of an imported package's
// function, "Func" for a call of the package's own function, and
// ".Method" for a method call.
func calleeName(f *goFile, call *ast.CallExpr) string {
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok {
			if ip, ok := f.imports[x.Name]; ok {
				return ip + "." + fn.Sel.Name
			}
		}
		return "." + fn.Sel.Name
	}
	return ""
}

// selectorPath returns ["a", "b", "c"] for a.b.c.
func selectorPath(e ast.Expr) []string {
	switch e := e.(type) {
	case *ast.Ident:
		return []string{e.Name}
	case *ast.SelectorExpr:
		if p := selectorPath(e.X); p != nil {
			return append(p, e.Sel.Name)
		}
	}
	return nil
}
