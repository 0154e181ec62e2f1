package docs

import (
	"fmt"
	"go/ast"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// notEventReasons are the constants named Reason*/Event* in packages that
// record Events which are not Event reasons, by "<package folder>.<name>"
// or, for typed constants, "<package folder>.<type>". conditions: the
// reason must be in conditions.md instead.
var notEventReasons = map[string]struct {
	conditions bool
	why        string
}{
	// The Announced condition's reason when every VIP has a node; its
	// False reason, NoAnnouncingNode, is an Event too.
	"loadbalancer/planner.ReasonAllAnnounced": {true, "condition ironlb.dev/Announced only"},
	// BGPPeer Ready=False reasons; the Event for them is PeerNotUsable,
	// with the condition's message.
	"loadbalancer/bgppeers.Reason": {true, "BGPPeer condition reasons only"},
	// Which grammar rule a Service's annotation broke: part of the
	// SyncLoadBalancerFailed Event's message, never a reason of its own.
	"loadbalancer.RequestErrorReason": {false, "RequestError.Reason, in the message of SyncLoadBalancerFailed"},
}

var eventConstRE = regexp.MustCompile(`^(Reason|Event)[A-Z]`)

// recordsEvents says whether call is recorder.Event/Eventf/AnnotatedEventf,
// and returns the index of its reason argument.
func recordsEvents(call *ast.CallExpr) (int, bool) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || !strings.Contains(strings.ToLower(exprString(sel.X)), "recorder") {
		return 0, false
	}
	switch sel.Sel.Name {
	case "Event", "Eventf":
		return 2, len(call.Args) >= 4
	case "AnnotatedEventf":
		return 3, len(call.Args) >= 5
	}
	return 0, false
}

func exprString(e ast.Expr) string { return strings.Join(selectorPath(e), ".") }

// codeEvents: every constant named Reason*/Event* (less notEventReasons)
// of the packages that record Events, and every constant or literal handed
// straight to recorder.Event/Eventf/AnnotatedEventf.
func codeEvents(m *module) (events, conditionOnly where, errs []string) {
	events, conditionOnly = where{}, where{}
	for _, pkg := range m.sortedPackages() {
		records := false
		for _, f := range pkg.files {
			ast.Inspect(f.ast, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				i, ok := recordsEvents(call)
				if !ok {
					return true
				}
				records = true
				// A literal or a constant; a variable (a helper's parameter)
				// is left to the constants rule below.
				switch a := call.Args[i].(type) {
				case *ast.BasicLit:
				case *ast.SelectorExpr:
					if x, ok := a.X.(*ast.Ident); !ok || f.imports[x.Name] == "" {
						return true
					}
				case *ast.Ident:
					if pkg.consts[a.Name] == nil {
						return true
					}
				default:
					return true
				}
				s, err := m.str(f, call.Args[i])
				if err != nil {
					errs = append(errs, err.Error())
					return true
				}
				events[s] = m.pos(call)
				return true
			})
		}
		if !records {
			continue
		}
		for name, c := range pkg.consts {
			if !eventConstRE.MatchString(name) {
				continue
			}
			s, err := m.str(c.file, c.expr)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if x, ok := notEventReasons[pkg.dir+"."+name]; ok {
				if x.conditions {
					conditionOnly[s] = m.pos(c.expr)
				}
				continue
			}
			if x, ok := notEventReasons[pkg.dir+"."+c.typ]; ok && c.typ != "" {
				if x.conditions {
					conditionOnly[s] = m.pos(c.expr)
				}
				continue
			}
			if _, ok := events[s]; !ok {
				events[s] = m.pos(c.expr)
			}
		}
	}
	return events, conditionOnly, errs
}

// TestEvents: docs/reference/events.md has a row for every Event reason
// IronLB records, and no other; the reasons that are condition reasons
// only are in conditions.md.
func TestEvents(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	events, condOnly, errs := codeEvents(m)
	if len(errs) > 0 {
		t.Fatalf("reading the Event reasons from the code:\n  %s", strings.Join(errs, "\n  "))
	}
	t.Run("events.md", func(t *testing.T) {
		compareSets(t, eventsPage, events, rowsOf(d.page(t, eventsPage), byName))
	})
	t.Run("condition-only reasons in conditions.md", func(t *testing.T) {
		docs := rowsOf(d.page(t, conditionsPage), byName)
		var missing []string
		for r, at := range condOnly {
			if _, ok := docs[r]; !ok {
				missing = append(missing, fmt.Sprintf("  %s (defined at %s)", r, at))
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s lacks these condition reasons (not Events, see notEventReasons in test/docs/events_test.go): add a row for each:\n%s", conditionsPage, strings.Join(missing, "\n"))
		}
	})
}
