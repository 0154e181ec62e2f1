package docs

import (
	"fmt"
	"go/ast"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goNameRE matches a backticked dotted Go name: "Planner.syncService",
// "speakers.Manager.Assign".
var goNameRE = regexp.MustCompile("`([A-Za-z_][A-Za-z0-9_]*(?:\\.[A-Za-z_][A-Za-z0-9_]*){1,2})`")

// apiFieldRE matches a Kubernetes object's field path ("spec.loadBalancerClass",
// "status.loadBalancer"), which names no Go declaration.
var apiFieldRE = regexp.MustCompile(`^(spec|status|metadata)\.[a-z]`)

// fileNameRE matches a file's name ("speaker.proto"), which TestStale and
// TestLinks check.
var fileNameRE = regexp.MustCompile(`\.(go|proto|md|ya?ml|json|sh|txt|pprof)$`)

// goNames indexes the module's declarations by the names docs use.
type goNames struct {
	// decls: package name → its top-level names (funcs, types, vars, consts).
	decls map[string]map[string]bool
	// members: type name, alone and as "package.Type" → its methods and
	// fields (interfaces' methods included).
	members map[string]map[string]bool
	// rpcs: gRPC service → its methods, from the module's .proto files.
	rpcs map[string]map[string]bool
}

func indexNames(t *testing.T, m *module) *goNames {
	t.Helper()
	n := &goNames{decls: map[string]map[string]bool{}, members: map[string]map[string]bool{}, rpcs: map[string]map[string]bool{}}
	add := func(set map[string]map[string]bool, k, v string) {
		if set[k] == nil {
			set[k] = map[string]bool{}
		}
		set[k][v] = true
	}
	addMembers := func(pkg, typ string, names ...string) {
		for _, name := range names {
			add(n.members, typ, name)
			add(n.members, pkg+"."+typ, name)
		}
	}
	for _, p := range m.sortedPackages() {
		for _, f := range p.files {
			pkg := f.ast.Name.Name
			for _, decl := range f.ast.Decls {
				switch d := decl.(type) {
				case *ast.FuncDecl:
					if d.Recv == nil {
						add(n.decls, pkg, d.Name.Name)
						continue
					}
					if typ := receiverType(d.Recv.List[0].Type); typ != "" {
						addMembers(pkg, typ, d.Name.Name)
					}
				case *ast.GenDecl:
					for _, spec := range d.Specs {
						switch s := spec.(type) {
						case *ast.TypeSpec:
							add(n.decls, pkg, s.Name.Name)
							addMembers(pkg, s.Name.Name, fieldNames(s.Type)...)
						case *ast.ValueSpec:
							for _, id := range s.Names {
								add(n.decls, pkg, id.Name)
							}
						}
					}
				}
			}
		}
	}
	serviceRE := regexp.MustCompile(`(?m)^service\s+(\w+)\s*\{`)
	rpcRE := regexp.MustCompile(`(?m)^\s*rpc\s+(\w+)\s*\(`)
	err := filepath.WalkDir(filepath.Join(m.root, "api"), func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".proto") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		text := string(b)
		for _, loc := range serviceRE.FindAllStringSubmatchIndex(text, -1) {
			svc := text[loc[2]:loc[3]]
			body := text[loc[1]:]
			if end := strings.Index(body, "\n}"); end >= 0 {
				body = body[:end]
			}
			for _, r := range rpcRE.FindAllStringSubmatch(body, -1) {
				add(n.rpcs, svc, r[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the .proto files: %v", err)
	}
	return n
}

// receiverType is the name of a method's receiver type: "Agent" for
// (a *Agent), "Set" for (s Set[T]).
func receiverType(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return receiverType(x.X)
	case *ast.IndexExpr:
		return receiverType(x.X)
	case *ast.IndexListExpr:
		return receiverType(x.X)
	case *ast.Ident:
		return x.Name
	}
	return ""
}

// fieldNames are a struct's fields or an interface's methods.
func fieldNames(e ast.Expr) []string {
	var list *ast.FieldList
	switch x := e.(type) {
	case *ast.StructType:
		list = x.Fields
	case *ast.InterfaceType:
		list = x.Methods
	default:
		return nil
	}
	var out []string
	for _, f := range list.List {
		for _, id := range f.Names {
			out = append(out, id.Name)
		}
		if len(f.Names) == 0 { // embedded: named by its type
			if name := receiverType(f.Type); name != "" {
				out = append(out, name)
			} else if sel, ok := f.Type.(*ast.SelectorExpr); ok {
				out = append(out, sel.Sel.Name)
			}
		}
	}
	return out
}

// resolve reports whether name is a declaration of the module:
// "pkg.Type.Member", "pkg.Decl", "Type.Member", or a gRPC
// "Service.Method".
func (n *goNames) resolve(name string) bool {
	parts := strings.Split(name, ".")
	switch len(parts) {
	case 3:
		return n.decls[parts[0]][parts[1]] && n.members[parts[0]+"."+parts[1]][parts[2]]
	case 2:
		return n.decls[parts[0]][parts[1]] || n.members[parts[0]][parts[1]] || n.rpcs[parts[0]][parts[1]]
	}
	return false
}

// TestDesignNames: every type, function and method docs/design.md names
// (its hop-by-hop path from a Service to ARP and to a BGP route above
// all) exists in the code under that name, so a reader can search for it.
func TestDesignNames(t *testing.T) {
	m := loadModule(t)
	md := loadDocs(t).page(t, "docs/design.md")
	n := indexNames(t, m)
	var bad []string
	checked := 0
	for i, line := range strings.Split(md.text, "\n") {
		for _, g := range goNameRE.FindAllStringSubmatch(line, -1) {
			name := g[1]
			if apiFieldRE.MatchString(name) || fileNameRE.MatchString(name) {
				continue
			}
			checked++
			if !n.resolve(name) {
				bad = append(bad, fmt.Sprintf("docs/design.md:%d: %s is no declaration of the module (rename it there as in the code)", i+1, name))
			}
		}
	}
	if checked == 0 {
		t.Fatal("docs/design.md names no Go declaration: the pattern no longer matches the page")
	}
	for _, b := range bad {
		t.Error(b)
	}
}
