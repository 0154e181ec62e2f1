package docs

import (
	"fmt"
	"go/ast"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/cloud-provider/options"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // as the binaries: adds the --log-json-* flags

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/binaries"
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

// Flags.

// flagCommands maps each function of the binaries' packages that defines
// flags to the command line it defines them for (docs/reference/flags.md's
// "Command" column). A function not listed here that defines flags fails
// TestFlags: add it.
var flagCommands = map[string]map[string]string{
	"cmd/ironlb-ccm":     {"main": "ironlb-ccm"},
	"cmd/ironlb-speaker": {"main": "ironlb-speaker", "controlPlaneFlags": "ironlb-speaker control-plane"},
	"cmd/kubectl-ironlb": {},
	"cli": {
		"convertCommand":              "kubectl ironlb convert metallb",
		"statusCommand":               "kubectl ironlb status",
		"controlPlaneManifestCommand": "kubectl ironlb control-plane manifest",
	},
}

// binaryOf is the "## " heading of flags.md a command's rows are under.
func binaryOf(command string) string {
	if strings.HasPrefix(command, "kubectl ironlb") {
		return "kubectl-ironlb"
	}
	if f := strings.Fields(command); len(f) > 0 {
		return f[0]
	}
	return ""
}

// flagHelpers are the library functions the binaries hand their flag set
// to; the test calls each on a fresh flag set to learn the flags it adds.
// A call that hands the flag set to a function not listed here fails
// TestFlags: add it.
var flagHelpers = map[string]func(*pflag.FlagSet){
	binaries.Module + "/cpvip.AddBGPFlags": func(fs *pflag.FlagSet) { cpvip.AddBGPFlags(fs, &cpvip.BGPConfig{}) },
	"k8s.io/component-base/logs/api/v1.AddFlags": func(fs *pflag.FlagSet) {
		logsapi.AddFlags(logsapi.NewLoggingConfiguration(), fs)
	},
	"k8s.io/client-go/tools/clientcmd.BindOverrideFlags": func(fs *pflag.FlagSet) {
		clientcmd.BindOverrideFlags(&clientcmd.ConfigOverrides{}, fs, clientcmd.RecommendedConfigOverrideFlags(""))
	},
}

// defaultSetters are the binaries' own functions that change the default
// of an upstream flag, with the index of the flag's name among their
// arguments (cmd/ironlb-ccm: setDefault(fs, name, value)).
var defaultSetters = map[string]int{"setDefault": 1}

var definerRE = regexp.MustCompile(`^(Bool|BoolSlice|BytesBase64|BytesHex|Count|Duration|DurationSlice|Float32|Float32Slice|Float64|Float64Slice|IP|IPMask|IPNet|IPNetSlice|IPSlice|Int|Int16|Int32|Int32Slice|Int64|Int64Slice|Int8|IntSlice|String|StringArray|StringSlice|StringToInt|StringToInt64|StringToString|Uint|Uint16|Uint32|Uint64|Uint8|UintSlice|Func|BoolFunc|Text|Time|)(Var)?(P|PF)?$`)

// isFlagSet says whether e is a flag set: a name assigned one in the
// function, or a cmd.Flags()/cmd.PersistentFlags() call.
func isFlagSet(f *goFile, e ast.Expr, sets map[string]bool) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return sets[e.Name]
	case *ast.CallExpr:
		c := calleeName(f, e)
		return c == ".Flags" || c == ".PersistentFlags" || c == "github.com/spf13/pflag.NewFlagSet" || c == "flag.NewFlagSet"
	}
	return false
}

// codeFlags reads the flags the binaries define: "<command> --<flag>".
func codeFlags(t *testing.T, m *module) (flags where, ccmOpts [][]string, ccmOptsAt []string, errs []string) {
	flags = where{}
	for dir, commands := range flagCommands {
		pkg := m.pkgs[dir]
		if pkg == nil {
			errs = append(errs, fmt.Sprintf("no package %s: update flagCommands in test/docs/docs_test.go", dir))
			continue
		}
		for _, f := range pkg.files {
			for _, decl := range f.ast.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				// The names of flag sets: assigned one, or a parameter of type *pflag.FlagSet.
				sets := map[string]bool{}
				for _, p := range fd.Type.Params.List {
					if star, ok := p.Type.(*ast.StarExpr); ok {
						if sel, ok := star.X.(*ast.SelectorExpr); ok && sel.Sel.Name == "FlagSet" {
							for _, n := range p.Names {
								sets[n.Name] = true
							}
						}
					}
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
						for i, l := range as.Lhs {
							if id, ok := l.(*ast.Ident); ok && isFlagSet(f, as.Rhs[i], sets) {
								sets[id.Name] = true
							}
						}
					}
					return true
				})
				command, known := commands[fd.Name.Name]
				add := func(name string, at ast.Node) {
					if !known {
						errs = append(errs, fmt.Sprintf("%s: %s defines the flag --%s, but flagCommands in test/docs/docs_test.go does not say which command %s.%s belongs to: add it", m.pos(at), fd.Name.Name, name, dir, fd.Name.Name))
						return
					}
					flags[command+" --"+name] = m.pos(at)
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.CompositeLit: // extra CCM flags handed to the framework
						if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "NamedFlagSets" && len(n.Elts) > 0 {
							errs = append(errs, fmt.Sprintf("%s: flags in a NamedFlagSets literal: teach TestFlags (test/docs/docs_test.go) to read them", m.pos(n)))
						}
					case *ast.AssignStmt: // opts.X.Y = ...: an upstream CCM flag's default
						if dir != "cmd/ironlb-ccm" {
							break
						}
						for _, l := range n.Lhs {
							if p := selectorPath(l); len(p) > 1 && p[0] == "opts" {
								ccmOpts = append(ccmOpts, p[1:])
								ccmOptsAt = append(ccmOptsAt, m.pos(l))
							}
						}
					case *ast.CallExpr:
						callee := calleeName(f, n)
						if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isFlagSet(f, sel.X, sets) {
							mm := definerRE.FindStringSubmatch(sel.Sel.Name)
							if mm == nil || (mm[1] == "" && mm[2] == "") {
								return true // Parse, Lookup, SetNormalizeFunc...
							}
							i := 0
							if mm[2] == "Var" {
								i = 1
							}
							if i >= len(n.Args) {
								return true
							}
							name, err := m.str(f, n.Args[i])
							if err != nil {
								errs = append(errs, fmt.Sprintf("cannot read a flag's name: %v", err))
								return true
							}
							add(name, n)
							return true
						}
						for _, a := range n.Args {
							if !isFlagSet(f, a, sets) {
								continue
							}
							if helper := flagHelpers[callee]; helper != nil {
								fs := pflag.NewFlagSet("helper", pflag.ContinueOnError)
								helper(fs)
								fs.VisitAll(func(fl *pflag.Flag) { add(fl.Name, n) })
							} else if i, ok := defaultSetters[callee]; ok && i < len(n.Args) {
								name, err := m.str(f, n.Args[i])
								if err != nil {
									errs = append(errs, fmt.Sprintf("cannot read a flag's name: %v", err))
								} else {
									add(name, n)
								}
							} else {
								errs = append(errs, fmt.Sprintf("%s: the flag set is handed to %s, which TestFlags does not know: add it to flagHelpers (or defaultSetters) in test/docs/docs_test.go", m.pos(n), callee))
							}
							break
						}
					}
					return true
				})
			}
		}
	}
	return flags, ccmOpts, ccmOptsAt, errs
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

// ccmFlagsOf returns the upstream flags whose default changes when the
// option at each path is changed: the flags main's "opts.X.Y = ..." lines
// set.
func ccmFlagsOf(paths [][]string) (map[int][]string, error) {
	defaults := func(o *options.CloudControllerManagerOptions) map[string]string {
		d := map[string]string{}
		for _, fs := range o.Flags(nil, nil, nil, nil, nil).FlagSets {
			fs.VisitAll(func(f *pflag.Flag) { d[f.Name] = f.DefValue })
		}
		return d
	}
	base, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	before := defaults(base)
	out := map[int][]string{}
	for i, p := range paths {
		o, err := options.NewCloudControllerManagerOptions()
		if err != nil {
			return nil, err
		}
		v := reflect.ValueOf(o).Elem()
		for _, name := range p {
			for v.Kind() == reflect.Pointer {
				v = v.Elem()
			}
			if v.Kind() != reflect.Struct {
				return nil, fmt.Errorf("opts.%s: not a field path", strings.Join(p, "."))
			}
			v = v.FieldByName(name)
			if !v.IsValid() {
				return nil, fmt.Errorf("opts.%s: no field %s", strings.Join(p, "."), name)
			}
		}
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "-changed")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Float32, reflect.Float64:
			v.SetFloat(v.Float() + 1)
		default:
			return nil, fmt.Errorf("opts.%s: a %s, which TestFlags cannot change", strings.Join(p, "."), v.Kind())
		}
		for name, def := range defaults(o) {
			if before[name] != def {
				out[i] = append(out[i], name)
			}
		}
	}
	return out, nil
}

// TestFlags: docs/reference/flags.md lists every flag of ironlb-ccm (the
// flags IronLB defines or whose default it changes), ironlb-speaker (both
// commands) and kubectl-ironlb (every command), and no other.
func TestFlags(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	code, paths, pathsAt, errs := codeFlags(t, m)
	changed, err := ccmFlagsOf(paths)
	if err != nil {
		errs = append(errs, fmt.Sprintf("cmd/ironlb-ccm: %v", err))
	}
	for i, at := range pathsAt {
		if len(changed[i]) == 0 && err == nil {
			errs = append(errs, fmt.Sprintf("%s: opts.%s changes no flag's default: TestFlags cannot tell which flag it is", at, strings.Join(paths[i], ".")))
		}
		for _, name := range changed[i] {
			code["ironlb-ccm --"+name] = at
		}
	}
	if len(errs) > 0 {
		t.Fatalf("reading the flags from the code:\n  %s", strings.Join(errs, "\n  "))
	}
	page := d.page(t, flagsPage)
	// A row: | `--flag` | `command`[, `command`...] | default | meaning |,
	// under the "## <binary>" heading of its commands.
	var misplaced []string
	docs := where{}
	for _, r := range page.rows {
		if !strings.HasPrefix(r.name, "-") {
			continue
		}
		var commands []string
		if len(r.cells) > 1 {
			commands = firstCodeAll(r.cells[1])
		}
		if len(commands) == 0 {
			misplaced = append(misplaced, fmt.Sprintf("%s:%d: %s: no command in the second column", page.rel, r.line, r.name))
		}
		for _, c := range commands {
			if binaryOf(c) != r.h2 {
				misplaced = append(misplaced, fmt.Sprintf("%s:%d: %s: command %q is not under its binary's heading (it is under ## %s)", page.rel, r.line, r.name, c, r.h2))
			}
			docs[c+" --"+strings.TrimLeft(r.name, "-")] = fmt.Sprintf("%s:%d", page.rel, r.line)
		}
	}
	for _, bin := range []string{"ironlb-ccm", "ironlb-speaker", "kubectl-ironlb"} {
		t.Run(bin, func(t *testing.T) {
			pick := func(w where) where {
				out := where{}
				for k, v := range w {
					if binaryOf(k) == bin {
						out[k] = v
					}
				}
				return out
			}
			compareSets(t, page.rel+" (## "+bin+")", pick(code), pick(docs))
		})
	}
	if len(misplaced) > 0 {
		t.Errorf("rows of %s under the wrong heading or without a command (second column):\n  %s", page.rel, strings.Join(misplaced, "\n  "))
	}
}

// Metrics.

// metric is what metrics.md says of a metric besides its meaning.
type metric struct {
	Type, Binary string
	Labels       []string
}

// metricBinary is the program whose /metrics serves the metrics of a
// package: the speaker's packages, the control-plane speaker's (cpvip),
// else the CCM.
func metricBinary(dir string) string {
	switch {
	case dir == "speaker" || strings.HasPrefix(dir, "speaker/"):
		return "ironlb-speaker"
	case dir == "cpvip":
		return "ironlb-speaker control-plane"
	}
	return "ironlb-ccm"
}

var metricsPkgs = map[string]bool{"k8s.io/component-base/metrics": true, "github.com/prometheus/client_golang/prometheus": true}

var constructorRE = regexp.MustCompile(`^New(Counter|Gauge|Histogram|Summary|TimingHistogram)(Vec)?$`)

// codeMetrics reads every metric the module's non-test code builds: the
// Opts literals handed to metrics.NewCounter/NewGaugeVec/... (Namespace,
// Subsystem and Name joined by "_") and the metrics.NewDesc descriptors of
// the scrape-time collectors (gauges: the code emits them with GaugeValue).
func codeMetrics(m *module) (map[string]metric, where, []string) {
	got, at := map[string]metric{}, where{}
	var errs []string
	labelsOf := func(f *goFile, e ast.Expr) []string {
		lit, ok := e.(*ast.CompositeLit)
		if !ok {
			if id, ok := e.(*ast.Ident); !ok || id.Name != "nil" {
				errs = append(errs, fmt.Sprintf("%s: labels not a []string literal: TestMetrics cannot read them", m.pos(e)))
			}
			return []string{}
		}
		ls := []string{}
		for _, el := range lit.Elts {
			s, err := m.str(f, el)
			if err != nil {
				errs = append(errs, err.Error())
			}
			ls = append(ls, s)
		}
		return ls
	}
	for _, pkg := range m.sortedPackages() {
		for _, f := range pkg.files {
			ast.Inspect(f.ast, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				x, ok := sel.X.(*ast.Ident)
				if !ok || !metricsPkgs[f.imports[x.Name]] {
					return true
				}
				if sel.Sel.Name == "CounterValue" {
					errs = append(errs, fmt.Sprintf("%s: a descriptor emitted as a counter: TestMetrics takes every NewDesc for a gauge; teach it", m.pos(call)))
				}
				if sel.Sel.Name == "NewDesc" && len(call.Args) >= 3 {
					name, err := m.str(f, call.Args[0])
					if err != nil {
						errs = append(errs, err.Error())
						return true
					}
					got[name] = metric{Type: "gauge", Binary: metricBinary(pkg.dir), Labels: labelsOf(f, call.Args[2])}
					at[name] = m.pos(call)
					return true
				}
				mm := constructorRE.FindStringSubmatch(sel.Sel.Name)
				if mm == nil || len(call.Args) == 0 {
					return true
				}
				arg := call.Args[0]
				if u, ok := arg.(*ast.UnaryExpr); ok {
					arg = u.X
				}
				lit, ok := arg.(*ast.CompositeLit)
				if !ok {
					errs = append(errs, fmt.Sprintf("%s: %s's options are not a literal: TestMetrics cannot read the metric's name", m.pos(call), sel.Sel.Name))
					return true
				}
				var parts []string
				for _, field := range []string{"Namespace", "Subsystem", "Name"} {
					for _, el := range lit.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok || kv.Key.(*ast.Ident).Name != field {
							continue
						}
						s, err := m.str(f, kv.Value)
						if err != nil {
							errs = append(errs, err.Error())
						}
						if s != "" {
							parts = append(parts, s)
						}
					}
				}
				name := strings.Join(parts, "_")
				labels := []string{}
				if mm[2] == "Vec" && len(call.Args) > 1 {
					labels = labelsOf(f, call.Args[1])
				}
				typ := strings.ToLower(mm[1])
				if typ == "timinghistogram" {
					typ = "histogram"
				}
				got[name] = metric{Type: typ, Binary: metricBinary(pkg.dir), Labels: labels}
				at[name] = m.pos(call)
				return true
			})
		}
	}
	return got, at, errs
}

// TestMetrics: docs/reference/metrics.md has a row for every metric the
// code registers, with its type, labels and binary, and no other.
func TestMetrics(t *testing.T) {
	m := loadModule(t)
	d := loadDocs(t)
	code, at, errs := codeMetrics(m)
	if len(errs) > 0 {
		t.Fatalf("reading the metrics from the code:\n  %s", strings.Join(errs, "\n  "))
	}
	page := d.page(t, metricsPage)
	docs := map[string]metric{}
	docsAt := rowsOf(page, func(r mdRow) (string, bool) {
		if !strings.HasPrefix(r.name, "ironlb_") {
			return "", false
		}
		cell := func(i int) string {
			if i < len(r.cells) {
				return r.cells[i]
			}
			return ""
		}
		labels := append([]string{}, firstCodeAll(cell(2))...)
		docs[r.name] = metric{Type: strings.Trim(cell(1), "` "), Labels: labels, Binary: strings.Trim(cell(3), "` ")}
		return r.name, true
	})
	t.Run("names", func(t *testing.T) { compareSets(t, page.rel, at, docsAt) })
	t.Run("type, labels, binary", func(t *testing.T) {
		want, got := map[string]metric{}, map[string]metric{}
		for name, mt := range code {
			if g, ok := docs[name]; ok {
				want[name], got[name] = mt, g
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: the Type, Labels or Binary column disagrees with the code; fix the rows in %s (-code +docs):\n%s", page.rel, page.rel, diff)
		}
	})
}

// firstCodeAll returns every code span of s.
func firstCodeAll(s string) []string {
	var out []string
	for _, m := range firstCode.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// Event reasons.

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
			t.Errorf("%s lacks these condition reasons (not Events, see notEventReasons in test/docs/docs_test.go): add a row for each:\n%s", conditionsPage, strings.Join(missing, "\n"))
		}
	})
}

// Conditions.

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
			errs = append(errs, fmt.Sprintf("no package %s: update conditionConsts in test/docs/docs_test.go", cc.dir))
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

// Packages.

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

// Stale statements.

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
