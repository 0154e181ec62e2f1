// Command demo shows IronLB working on this machine: `make demo`.
//
// It starts a real etcd and kube-apiserver on loopback, installs deploy/'s
// RBAC, runs ironlb-ccm with the token of its ServiceAccount, registers three
// Nodes the way kubelets with --cloud-provider=external do, and shows them
// initialized. It then waits for Ctrl-C (or exits at once with -once) and
// removes every process and file it made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

func main() {
	once := flag.Bool("once", false, "run every step, clean up and exit instead of waiting for Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{once: *once}
	err := d.run(ctx)
	d.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	once    bool
	dir     string
	step    int
	cp      *controlplane.ControlPlane
	ccm     *procs.Process
	cleaned bool
}

const steps = 5

// do runs one numbered step and reports its outcome and, on failure, the log
// to read.
func (d *demo) do(title, logPath string, fn func() error) error {
	d.step++
	fmt.Printf("[%d/%d] %s ... ", d.step, steps, title)
	start := time.Now()
	if err := fn(); err != nil {
		fmt.Println("FAILED")
		if logPath != "" {
			return fmt.Errorf("step %d (%s): %w\n  log: %s\n%s", d.step, title, err, logPath, indent(procs.Tail(readFile(logPath), 15)))
		}
		return fmt.Errorf("step %d (%s): %w", d.step, title, err)
	}
	fmt.Printf("done (%.1fs)\n", time.Since(start).Seconds())
	return nil
}

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.dir, err = os.MkdirTemp("", "ironlb-demo-"); err != nil {
		return err
	}
	fmt.Printf("IronLB demo (work folder %s)\n\n", d.dir)

	err = d.do("Building ironlb-ccm and ironlb-speaker", "", func() error {
		_, err := binaries.IronLB()
		return err
	})
	if err != nil {
		return err
	}
	cpDir := filepath.Join(d.dir, "controlplane")
	err = d.do("Starting etcd and kube-apiserver on loopback", filepath.Join(cpDir, "kube-apiserver.log"), func() error {
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		d.cp, err = controlplane.Start(startCtx, controlplane.Options{Dir: cpDir})
		return err
	})
	if err != nil {
		return err
	}
	var kubeconfig string
	err = d.do("Installing deploy/ and starting ironlb-ccm with its ServiceAccount token", filepath.Join(d.dir, "ironlb-ccm.log"), func() error {
		root, err := binaries.RepoRoot()
		if err != nil {
			return err
		}
		if _, err := d.cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy")); err != nil {
			return err
		}
		if kubeconfig, err = d.cp.ServiceAccountKubeconfig(ctx, "kube-system", "ironlb-ccm"); err != nil {
			return err
		}
		d.ccm, err = rig.StartCCM(rig.CCMOptions{Name: "ironlb-ccm", Kubeconfig: kubeconfig, LogDir: d.dir, LeaderElect: true})
		if err != nil {
			return err
		}
		return d.ccm.WaitForLog(`"Successfully acquired lease"`, 30*time.Second)
	})
	if err != nil {
		return err
	}
	nodes := []struct{ name, ip string }{
		{"node-a", "192.0.2.11"},
		{"node-b", "2001:db8::12"},
		{"node-c", "192.0.2.13,2001:db8::13"},
	}
	err = d.do("Registering 3 tainted Nodes as kubelets with --cloud-provider=external do", "", func() error {
		for _, n := range nodes {
			if _, err := rig.RegisterNode(ctx, d.cp.Client, n.name, n.ip, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = d.do("Waiting for ironlb-ccm to initialize them", d.ccm.LogPath, func() error {
		return rig.Eventually(30*time.Second, func() error {
			for _, n := range nodes {
				node, err := d.cp.Client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if !rig.Initialized(node) {
					return fmt.Errorf("node %s still has the uninitialized taint", n.name)
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}

	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "nodes", "-o", "custom-columns=NAME:.metadata.name,PROVIDER-ID:.spec.providerID,ADDRESSES:.status.addresses[*].address,TAINTS:.spec.taints[*].key"},
	} {
		out, err := d.cp.Kubectl(ctx, args...)
		if err != nil {
			return err
		}
		fmt.Printf("\n$ kubectl %s\n%s", join(args), out)
	}

	if d.once {
		fmt.Println("\nAll steps passed; cleaning up (-once).")
		return nil
	}
	fmt.Printf(`
The cluster stays up until you press Ctrl-C. Try:
  export KUBECONFIG=%s
  %s get nodes -o wide
  %s describe node node-b
  %s get events -A
Logs: %s
`, d.cp.KubeconfigPath, d.cp.Bin.Kubectl, d.cp.Bin.Kubectl, d.cp.Bin.Kubectl, d.dir)
	select {
	case <-ctx.Done():
		fmt.Println("\nCtrl-C: cleaning up.")
		return nil
	case <-d.ccm.Done():
		return errors.New("ironlb-ccm exited unexpectedly; log: " + d.ccm.LogPath)
	}
}

// cleanup stops every process and removes the work folder.
func (d *demo) cleanup() {
	if d.ccm != nil {
		_ = d.ccm.Stop(10 * time.Second)
	}
	if d.cp != nil {
		if err := d.cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
		}
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			fmt.Fprintf(os.Stderr, "removing %s: %v\n", d.dir, err)
		}
	}
}
