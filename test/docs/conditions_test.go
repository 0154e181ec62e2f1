package docs

import (
	"fmt"
	"go/ast"
	"strings"
	"testing"
)

// conditionConsts: the packages whose constants are condition types and
// reasons. api/v1alpha1: every Condition*/Reason* constant (IPPool's, and
// BGPPeer's, which share them); capiipam and bgppeers: their constants of
// type Reason (a Cluster API claim's Ready reasons; a BGPPeer's Ready
// reasons).
var conditionConsts = []struct {
	dir, namePrefix, typ string
}{
	{"api/v1alpha1", "Condition", ""},
	{"api/v1alpha1", "Reason", ""},
	{"loadbalancer/capiipam", "Reason", "Reason"},
	{"loadbalancer/bgppeers", "Reason", "Reason"},
}

const metav1Path = "k8s.io/apimachinery/pkg/apis/meta/v1"

// codeConditions: the constants of conditionConsts, and every Type and
// Reason a metav1.Condition literal (or an assignment to a condition's
// Reason next to its Status) in the module's code sets.
func codeConditions(m *module) (where, []string) {
	w := where{}
	var errs []string
	for _, cc := range conditionConsts {
		pkg := m.pkgs[cc.dir]
		if pkg == nil {
			errs = append(errs, fmt.Sprintf("no package %s: update conditionConsts in test/docs/conditions_test.go", cc.dir))
			continue
		}
		for name, c := range pkg.consts {
			if !strings.HasPrefix(name, cc.namePrefix) || (cc.typ != "" && c.typ != cc.typ) {
				continue
			}
			s, err := m.str(c.file, c.expr)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			w[s] = m.pos(c.expr)
		}
	}
	for _, pkg := range m.sortedPackages() {
		for _, f := range pkg.files {
			ast.Inspect(f.ast, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CompositeLit:
					sel, ok := n.Type.(*ast.SelectorExpr)
					if !ok || sel.Sel.Name != "Condition" {
						return true
					}
					if x, ok := sel.X.(*ast.Ident); !ok || f.imports[x.Name] != metav1Path {
						return true
					}
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if k := kv.Key.(*ast.Ident).Name; k == "Type" || k == "Reason" {
							if s, err := m.str(f, kv.Value); err == nil {
								w[s] = m.pos(kv)
							} // else a variable: the constants above cover it
						}
					}
				case *ast.AssignStmt: // c.Status, c.Reason = metav1.ConditionFalse, ReasonX
					if len(n.Lhs) != len(n.Rhs) {
						return true
					}
					status := false
					for _, l := range n.Lhs {
						if p := selectorPath(l); len(p) == 2 && p[1] == "Status" {
							status = true
						}
					}
					for i, l := range n.Lhs {
						if p := selectorPath(l); status && len(p) == 2 && p[1] == "Reason" {
							if s, err := m.str(f, n.Rhs[i]); err == nil {
								w[s] = m.pos(l)
							}
						}
					}
				}
				return true
			})
		}
	}
	return w, errs
}

// TestConditions: docs/reference/conditions.md has a row for every
// condition type and reason of IronLB's objects (IPPool, BGPPeer, the
// Service's ironlb.dev/Announced, a Cluster API claim's Ready), and no
// other.
func TestConditions(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	code, errs := codeConditions(m)
	if len(errs) > 0 {
		t.Fatalf("reading the conditions from the code:\n  %s", strings.Join(errs, "\n  "))
	}
	compareSets(t, conditionsPage, code, rowsOf(d.page(t, conditionsPage), byName))
}
