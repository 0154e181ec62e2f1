// Command demo shows IronLB working on this machine: `make demo`.
//
// It starts a real etcd and kube-apiserver on loopback, installs deploy/,
// and builds a LAN of network namespaces: three nodes running the real
// ironlb-speaker, a client, and ironlb-ccm running with its ServiceAccount's
// token. It applies an IPPool and three Services of type LoadBalancer,
// reaches their VIPs from the client, and kills the speaker announcing one
// of them to show the VIP move. Then BGP: a router running FRR peers with
// every node, a Service from a BGP pool gets an ECMP route over all three
// nodes, and a client behind the router reaches several of them. It then
// waits for Ctrl-C (or exits at once
// with -once) and removes every process, namespace and file it made; after a
// failed step it keeps its work folder so the logs can be read.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

// sample is the IPPool and the Services the demo applies.
//
//go:embed sample.yaml
var sample string

// sampleBGP is the BGPPeer, the BGP pool and the Service of the BGP step.
//
//go:embed sample-bgp.yaml
var sampleBGP string

var services = []string{"svc1", "svc2", "svc3"}

// errInterrupted is returned when Ctrl-C stops a step.
var errInterrupted = errors.New("interrupted")

func main() {
	once := flag.Bool("once", false, "run every step, clean up and exit instead of waiting for Ctrl-C")
	flag.Parse()
	// The handler stays installed through cleanup: a second Ctrl-C must not
	// kill the demo halfway through removing what it made.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{once: *once}
	start := time.Now()
	err := d.run(ctx)
	interrupted := errors.Is(err, errInterrupted)
	if err != nil && !interrupted {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
	}
	cerr := d.cleanup(err != nil && !interrupted)
	switch {
	case interrupted:
		fmt.Println("Interrupted before every step had run.")
		os.Exit(130)
	case err != nil:
		if _, serr := os.Stat(d.dir); d.dir != "" && serr == nil {
			fmt.Fprintf(os.Stderr, "The work folder is kept for its logs: %s\n", d.dir)
		}
		os.Exit(1)
	case cerr != nil:
		os.Exit(1)
	}
	fmt.Printf("Demo finished in %.1fs.\n", time.Since(start).Seconds())
}

type demo struct {
	once   bool
	dir    string
	step   int
	cp     *controlplane.ControlPlane
	lan    *netrig.LAN
	up     *netrig.LAN // behind the router
	bgp    *rig.BGP
	l2     *rig.L2
	vips   map[string]netip.Addr
	owners map[string]string // Service -> node announcing its VIP
}

const steps = 12

// do runs the next step and prints its outcome. On failure the error names
// the step and ends with the tails of the logs to read.
func (d *demo) do(ctx context.Context, title string, logs func() []string, fn func() error) error {
	d.step++
	fmt.Printf("[%d/%d] %s ... ", d.step, steps, title)
	start := time.Now()
	err := fn()
	if err == nil {
		fmt.Printf("ok (%.1fs)\n", time.Since(start).Seconds())
		return nil
	}
	if ctx.Err() != nil {
		fmt.Println("interrupted")
		return errInterrupted
	}
	fmt.Println("FAILED")
	msg := fmt.Sprintf("step %d/%d (%s): %v", d.step, steps, title, err)
	if logs != nil {
		for _, p := range logs() {
			msg += fmt.Sprintf("\n  log: %s\n%s", p, indent(procs.Tail(readFile(p), 10)))
		}
	}
	return errors.New(msg)
}

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "ironlb-demo-"); err != nil {
		return err
	}
	fmt.Printf("IronLB demo (pid %d, work folder %s)\n\n", os.Getpid(), d.dir)
	cpDir, l2Dir := filepath.Join(d.dir, "controlplane"), filepath.Join(d.dir, "l2")
	cpLogs := func() []string {
		return []string{filepath.Join(cpDir, "etcd.log"), filepath.Join(cpDir, "kube-apiserver.log")}
	}
	l2Logs := func() []string {
		logs, _ := filepath.Glob(filepath.Join(l2Dir, "*.log"))
		return logs
	}

	err = d.do(ctx, "Checking prerequisites (root, ip netns, FRR, control-plane binaries)", nil, func() error {
		if os.Geteuid() != 0 {
			return errors.New("the demo creates network namespaces and must run as root")
		}
		if err := netrig.Usable(); err != nil {
			return fmt.Errorf("%w\n  the demo needs iproute2's `ip netns` and the right to create network namespaces", err)
		}
		if err := frr.Usable(); err != nil {
			return fmt.Errorf("%w\n  make demo installs it (make deps)", err)
		}
		_ = netrig.Sweep() // namespaces left by killed runs
		_, err := binaries.FindControlPlane()
		return err
	})
	if err != nil {
		return err
	}
	err = d.do(ctx, "Building ironlb-ccm and ironlb-speaker", nil, func() error {
		_, err := binaries.IronLB()
		return err
	})
	if err != nil {
		return err
	}
	var kubeconfig string
	err = d.do(ctx, "Starting etcd and kube-apiserver, installing deploy/", cpLogs, func() (err error) {
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if d.cp, err = controlplane.Start(startCtx, controlplane.Options{Dir: cpDir}); err != nil {
			return err
		}
		kubeconfig, err = rig.InstallDeploy(ctx, d.cp)
		return err
	})
	if err != nil {
		return err
	}
	err = d.do(ctx, "Building the LAN: node-a..node-c with ironlb-speaker, a client, ironlb-ccm, a router (FRR) with a client behind it", l2Logs, func() (err error) {
		if d.lan, err = netrig.NewLANNoTest(); err != nil {
			return err
		}
		if d.up, err = netrig.NewLANNoTest(); err != nil {
			return err
		}
		d.bgp, err = rig.StartBGP(ctx, d.cp, d.lan, d.up, rig.L2Options{Nodes: 3, Kubeconfig: kubeconfig, LogDir: l2Dir}, "")
		if d.bgp != nil {
			d.l2 = d.bgp.L2
		}
		return err
	})
	if err != nil {
		return err
	}
	err = d.do(ctx, "Waiting for ironlb-ccm to initialize the nodes", l2Logs, func() error {
		return waitFor(ctx, 30*time.Second, func() error {
			for _, n := range d.l2.Nodes {
				node, err := d.cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if !rig.Initialized(node) {
					return fmt.Errorf("node %s still has the uninitialized taint", n.Name)
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if err := d.kubectl(ctx, "get", "nodes", "-o", "wide"); err != nil {
		return err
	}

	fmt.Println()
	var applied string
	err = d.do(ctx, "Applying an IPPool and Services svc1..svc3 (test/demo/sample.yaml)", l2Logs, func() error {
		// The CRD may need a moment to be served after deploy/ is applied.
		return waitFor(ctx, 30*time.Second, func() (err error) {
			applied, err = d.cp.KubectlStdin(ctx, sample, "apply", "-f", "-")
			return err
		})
	})
	if err != nil {
		return err
	}
	fmt.Println(indent(strings.TrimSpace(applied)))
	err = d.do(ctx, "Waiting for ironlb-ccm to give each Service an EXTERNAL-IP", l2Logs, func() error {
		d.vips = map[string]netip.Addr{}
		return waitFor(ctx, 30*time.Second, func() error {
			for _, name := range services {
				svc, err := d.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if len(svc.Status.LoadBalancer.Ingress) == 0 {
					return fmt.Errorf("Service %s has no EXTERNAL-IP yet", name)
				}
				if d.vips[name], err = netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if err := d.kubectl(ctx, "get", "svc"); err != nil {
		return err
	}

	fmt.Println()
	var reached []string
	err = d.do(ctx, "Reaching each VIP from the client namespace", l2Logs, func() error {
		d.owners = map[string]string{}
		for _, name := range services {
			vip := d.vips[name]
			node, err := d.l2.WaitReachable(ctx, vip, 15*time.Second)
			if err != nil {
				return fmt.Errorf("%s (%s): %w", name, vip, err)
			}
			ann, err := d.l2.Announcer(vip)
			if err != nil {
				return err
			}
			if ann.Name != node {
				return fmt.Errorf("%s: %s answered, but the client resolved %s to %s's MAC", name, node, vip, ann.Name)
			}
			d.owners[name] = node
			reached = append(reached, fmt.Sprintf("%s  %-13s answered by %s; the client resolved it to %s (%s's MAC)",
				name, vip, node, ann.Host.MAC, ann.Name))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, line := range reached {
		fmt.Println("  " + line)
	}
	fmt.Println("  all three VIPs answered")

	fmt.Println()
	vip, from := d.vips["svc1"], d.owners["svc1"]
	var f rig.Failover
	var movedMAC string
	err = d.do(ctx, fmt.Sprintf("Killing the speaker on %s, which announces svc1's VIP", from), l2Logs, func() (err error) {
		if f, err = d.l2.MeasureFailover(ctx, vip, rig.Crash); err != nil {
			return err
		}
		ann, err := d.l2.Announcer(vip)
		if err != nil {
			return err
		}
		if ann.Name != f.To {
			return fmt.Errorf("%s answered, but the client resolved %s to %s's MAC", f.To, vip, ann.Name)
		}
		movedMAC = ann.Host.MAC.String()
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("  the client, connecting every %s, was cut off for %s (failed connections: %d)\n",
		rig.ProbeInterval, f.Outage.Round(time.Millisecond), f.Failed)
	fmt.Printf("  %s moved from %s to %s; the client now resolves it to %s\n", vip, f.From, f.To, movedMAC)
	fmt.Printf("  (%s's speaker was restarted afterwards)\n", f.From)

	if err := d.bgpSteps(ctx, l2Logs); err != nil {
		return err
	}

	if d.once {
		fmt.Printf("\nAll %d steps passed; cleaning up (-once).\n", steps)
		return nil
	}
	d.printHints()
	select {
	case <-ctx.Done():
		fmt.Println("\nCtrl-C: stopping.")
		return nil
	case <-d.l2.CCM.Done():
		return fmt.Errorf("ironlb-ccm exited unexpectedly; log: %s", d.l2.CCM.LogPath)
	}
}

// kubectl prints a kubectl command and its output.
func (d *demo) kubectl(ctx context.Context, args ...string) error {
	out, err := d.cp.Kubectl(ctx, args...)
	if err != nil {
		return err
	}
	fmt.Printf("\n$ kubectl %s\n%s", join(args), out)
	return nil
}

func (d *demo) printHints() {
	k := d.cp.Bin.Kubectl
	vip := d.vips["svc1"]
	fmt.Printf(`
All %d steps passed. The cluster stays up until you press Ctrl-C. Try:
  export KUBECONFIG=%s
  %s get svc
  %s describe svc svc1      # its Events say which node announces the VIP
  %s get ippools
`, steps, d.cp.KubeconfigPath, k, k, k)
	// The VIPs live on the demo's LAN: reach them from the client's
	// namespace. The nodes' responders answer with a bare line, no HTTP.
	if _, err := exec.LookPath("curl"); err == nil {
		fmt.Printf("  ip netns exec %s curl -s --http0.9 http://%s/    # prints the answering node\n", d.l2.Client.Name, vip)
	} else {
		fmt.Printf("  ip netns exec %s bash -c 'cat </dev/tcp/%s/80'    # prints the answering node\n", d.l2.Client.Name, vip)
		fmt.Printf("  %s get events --field-selector involvedObject.name=svc1\n", k)
	}
	if d.bgp != nil {
		fmt.Printf("  %s get bgppeers -o yaml   # the sessions of every node\n", k)
		fmt.Printf("  %s -c 'show bgp ipv4 unicast'    # FRR's view\n", d.bgp.Router.VtyshCommand())
		fmt.Printf("  ip netns exec %s ip route    # the router's ECMP routes\n", d.bgp.Router.Host.Name)
	}
	fmt.Printf("Logs: %s\n", d.dir)
}

// cleanup stops every process, removes the namespaces and the work folder,
// unless keep is set and the folder holds something (logs to read).
func (d *demo) cleanup(keep bool) error {
	fmt.Print("\nCleaning up: processes, network namespaces, control plane, work folder ... ")
	start := time.Now()
	var errs []error
	if d.bgp != nil {
		d.bgp.Stop()
	} else if d.l2 != nil {
		d.l2.Stop()
	}
	for _, l := range []*netrig.LAN{d.up, d.lan} {
		if l != nil {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("removing the network namespaces: %w", err))
			}
		}
	}
	if d.cp != nil {
		if err := d.cp.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	if ents, _ := os.ReadDir(d.dir); d.dir != "" && (!keep || len(ents) == 0) {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Println("FAILED")
		fmt.Fprintln(os.Stderr, err)
		return err
	}
	fmt.Printf("ok (%.1fs)\n", time.Since(start).Seconds())
	return nil
}

// waitFor polls cond every 100ms until it returns nil, timeout passes or
// ctx is done.
func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
