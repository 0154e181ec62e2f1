package docs

import (
	"fmt"
	"go/ast"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/cloud-provider/options"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // as the binaries: adds the --log-json-* flags

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/binaries"
)

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
			errs = append(errs, fmt.Sprintf("no package %s: update flagCommands in test/docs/flags_test.go", dir))
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
						errs = append(errs, fmt.Sprintf("%s: %s defines the flag --%s, but flagCommands in test/docs/flags_test.go does not say which command %s.%s belongs to: add it", m.pos(at), fd.Name.Name, name, dir, fd.Name.Name))
						return
					}
					flags[command+" --"+name] = m.pos(at)
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.CompositeLit: // extra CCM flags handed to the framework
						if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "NamedFlagSets" && len(n.Elts) > 0 {
							errs = append(errs, fmt.Sprintf("%s: flags in a NamedFlagSets literal: teach TestFlags (test/docs/flags_test.go) to read them", m.pos(n)))
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
								errs = append(errs, fmt.Sprintf("%s: the flag set is handed to %s, which TestFlags does not know: add it to flagHelpers (or defaultSetters) in test/docs/flags_test.go", m.pos(n), callee))
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
