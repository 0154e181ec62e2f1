// Command conformance runs Kubernetes' own LoadBalancer e2e specs (every
// [Feature:LoadBalancer] spec of k8s.io/kubernetes v1.37.2
// test/e2e/network, built as e2e.test by make conformance) against a real
// cluster with IronLB installed (package test/cluster), in two
// configurations:
//
//   - bgp: VIPs from a BGP pool, advertised by every eligible node to the
//     router, which spreads them with ECMP;
//   - l2: VIPs from a layer-2 pool on the nodes' LAN, one node answering for
//     each.
//
// The e2e binary runs on the outside client behind the router (203.0.113.10,
// off the nodes' subnet), so that the ExternalTrafficPolicy: Local specs
// see a real, unmasqueraded client address. It prints one line per spec
// (passed, failed, or skipped with the reason) and a summary per
// configuration, and exits 1 on any failure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/cluster"
)

// skips are the specs a configuration cannot pass by design, with why.
var skips = map[string]map[string]string{
	cluster.L2Config: {
		"should target all nodes with endpoints": "layer 2: one node answers for a VIP, and with externalTrafficPolicy: Local only that node's endpoints get traffic; the spec needs two nodes to receive it at once",
	},
}

// focus selects the specs run.
const focus = `\[Feature:LoadBalancer\]`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run() error {
	root, _ := binaries.RepoRoot()
	tools := flag.String("tools", filepath.Join(root, ".cache", "bin"), "the Kubernetes binaries and e2e.test")
	images := flag.String("ironlb-images", filepath.Join(root, "bin", "images"), "IronLB's OCI image layouts (make image)")
	cache := flag.String("image-cache", filepath.Join(root, ".cache", "cluster-images"), "where the cluster's images are kept")
	dir := flag.String("dir", filepath.Join(root, ".cache", "conformance"), "the cluster's folder and the reports")
	configs := flag.String("configs", cluster.BGPConfig+","+cluster.L2Config, "the configurations to run, in order")
	nodes := flag.Int("nodes", 3, "nodes of the cluster: node-1 (control plane) and workers")
	extra := flag.String("focus", "", "only specs whose name matches this regular expression as well")
	keep := flag.Bool("keep", false, "leave the cluster up at the end (ironlb-cluster -dir <dir> down removes it)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	_ = cluster.Remove(*dir)
	c, err := cluster.Up(ctx, cluster.Options{
		Dir: filepath.Join(*dir, "cluster"), Nodes: *nodes, ToolsBin: *tools, ImageCache: *cache,
		RepoRoot: root, IronLBImages: *images, Log: os.Stdout,
	})
	if err != nil {
		return err
	}
	if *keep {
		if err := c.SaveState(); err != nil {
			return err
		}
	} else {
		defer func() {
			if err := c.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "conformance: tearing down:", err)
			}
		}()
	}
	var summaries []string
	var failed bool
	for _, config := range strings.Split(*configs, ",") {
		fmt.Printf("\n== %s: configuring IronLB\n", config)
		if err := c.Configure(ctx, config); err != nil {
			return err
		}
		t := time.Now()
		results, err := runE2E(ctx, c, *tools, filepath.Join(*dir, "report-"+config), config, *extra)
		if err != nil {
			return fmt.Errorf("%s: %w", config, err)
		}
		var passed, fails, skipped int
		for _, r := range results {
			switch r.state {
			case "passed":
				passed++
			case "skipped":
				skipped++
			default:
				fails++
				failed = true
			}
			fmt.Println(r.line(config))
		}
		s := fmt.Sprintf("%s: %d passed, %d failed, %d skipped (%s)", config, passed, fails, skipped, time.Since(t).Round(time.Second))
		fmt.Println(s)
		summaries = append(summaries, s)
	}
	fmt.Printf("\nconformance in %s\n", time.Since(start).Round(time.Second))
	for _, s := range summaries {
		fmt.Println(s)
	}
	if failed {
		return errors.New("specs failed (reports in " + *dir + ")")
	}
	return nil
}

// result is one spec's outcome.
type result struct {
	name, state, reason string
	runtime             time.Duration
}

func (r result) line(config string) string {
	s := fmt.Sprintf("%-7s [%s] %s (%s)", r.state, config, r.name, r.runtime.Round(time.Second))
	if r.reason != "" {
		s += ": " + r.reason
	}
	return s
}

// runE2E runs e2e.test on the outside client and reads its JSON report.
func runE2E(ctx context.Context, c *cluster.Cluster, tools, reportDir, config, extra string) ([]result, error) {
	if err := os.MkdirAll(reportDir, 0o755); err != nil {
		return nil, err
	}
	report := filepath.Join(reportDir, "report.json")
	_ = os.Remove(report)
	args := []string{
		"netns", "exec", c.Client.Name, filepath.Join(tools, "e2e.test"),
		"--kubeconfig=" + c.Kubeconfig,
		"--provider=skeleton",
		"--kubectl-path=" + filepath.Join(tools, "kubectl"),
		"--report-dir=" + reportDir,
		"--ginkgo.focus=" + focus,
		"--ginkgo.json-report=" + report,
		"--ginkgo.timeout=4h",
		"--ginkgo.no-color",
		"--ginkgo.v",
	}
	if extra != "" {
		args = append(args, "--ginkgo.focus="+extra)
	}
	var skipNames []string
	for name := range skips[config] {
		skipNames = append(skipNames, regexp.QuoteMeta(name))
	}
	sort.Strings(skipNames)
	if len(skipNames) > 0 {
		args = append(args, "--ginkgo.skip="+strings.Join(skipNames, "|"))
	}
	log, err := os.Create(filepath.Join(reportDir, "e2e.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	fmt.Printf("== %s: e2e.test --ginkgo.focus=%s (log: %s)\n", config, focus, log.Name())
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"))
	runErr := cmd.Run()
	results, err := readReport(report, config)
	if err != nil {
		return nil, fmt.Errorf("e2e.test: %v; its report: %w", runErr, err)
	}
	return results, nil
}

// specReport is the part of a Ginkgo v2 spec report the summary needs.
type specReport struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	RunTime                 time.Duration
	Failure                 *struct {
		Message  string
		Location struct {
			FileName   string
			LineNumber int
		}
	}
}

// skipReason is why config skips the spec named leaf ("" if it does
// not): the names in skips lack the labels Ginkgo appends ("[Slow]").
func skipReason(config, leaf string) string {
	for name, reason := range skips[config] {
		if leaf == name || strings.HasPrefix(leaf, name+" [") {
			return reason
		}
	}
	return ""
}

// readReport returns the [Feature:LoadBalancer] specs of a Ginkgo JSON
// report; the ones skipped by design get their reason.
func readReport(path, config string) ([]result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var reports []struct{ SpecReports []specReport }
	if err := json.Unmarshal(b, &reports); err != nil {
		return nil, err
	}
	var out []result
	for _, rep := range reports {
		for _, s := range rep.SpecReports {
			if s.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
			if !strings.Contains(name, "[Feature:LoadBalancer]") {
				continue
			}
			r := result{name: name, state: s.State, runtime: s.RunTime}
			if reason := skipReason(config, s.LeafNodeText); reason != "" && s.State == "skipped" {
				r.reason = reason
			} else if s.Failure != nil && s.State != "passed" {
				msg := strings.TrimSpace(s.Failure.Message)
				if i := strings.IndexByte(msg, '\n'); i > 0 {
					msg = msg[:i]
				}
				r.reason = fmt.Sprintf("%s (%s:%d)", msg, filepath.Base(s.Failure.Location.FileName), s.Failure.Location.LineNumber)
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}
