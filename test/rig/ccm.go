// Package rig assembles IronLB's test environment from real parts: the
// control plane of package controlplane, the ironlb-ccm binary, and (for
// data-plane tests) network namespaces with speakers.
package rig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/procs"
)

// CCMOptions configures one ironlb-ccm process.
type CCMOptions struct {
	// Name distinguishes processes in logs, e.g. "ccm-a".
	Name string
	// Kubeconfig is used for the API, and for delegated authentication and
	// authorization of the secure port.
	Kubeconfig string
	// LogDir receives <Name>.log.
	LogDir string
	// LeaderElect turns on leader election with short test timings.
	LeaderElect bool
	// Shipped runs the CCM with the flags deploy/ ships (ShippedCCMArgs)
	// and the binary's defaults, adding only what the rig needs to reach it
	// (kubeconfig, serving address and certificates); LeaderElect is then
	// ignored.
	Shipped bool
	// Namespace is the CCM's namespace ($(POD_NAMESPACE) in the shipped
	// flags); default ironlb-system.
	Namespace string
	// Args are extra flags.
	Args []string
	// SecurePort is the secure port; 0 picks a free loopback port.
	SecurePort int
	// Process sets how the process starts (for example inside a network
	// namespace, with procs.Options.Wrap).
	Process procs.Options
}

// StartCCM starts the real ironlb-ccm binary.
func StartCCM(opts CCMOptions) (*procs.Process, error) {
	dir, err := binaries.IronLB()
	if err != nil {
		return nil, err
	}
	port := opts.SecurePort
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var args []string
	if opts.Shipped {
		ns := opts.Namespace
		if ns == "" {
			ns = "ironlb-system"
		}
		var env []string
		if args, env, err = ShippedCCM(ns); err != nil {
			return nil, err
		}
		opts.Process.Env = append(env, opts.Process.Env...)
	}
	args = append(args,
		"--kubeconfig="+opts.Kubeconfig,
		"--authentication-kubeconfig="+opts.Kubeconfig,
		"--authorization-kubeconfig="+opts.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(opts.LogDir, opts.Name+"-certs"),
	)
	if !opts.Shipped {
		args = append(args, "--leader-elect="+strconv.FormatBool(opts.LeaderElect), "--node-status-update-frequency=5s")
	}
	if opts.LeaderElect && !opts.Shipped {
		ns := opts.Namespace
		if ns == "" {
			ns = "ironlb-system"
		}
		args = append(args,
			"--leader-elect-resource-namespace="+ns,
			"--leader-elect-lease-duration=4s",
			"--leader-elect-renew-deadline=3s",
			"--leader-elect-retry-period=500ms")
	}
	args = append(args, opts.Args...)
	return procs.Start(opts.Name, filepath.Join(opts.LogDir, opts.Name+".log"), filepath.Join(dir, "ironlb-ccm"), args, opts.Process)
}

// ShippedCCM returns the ironlb-ccm flags of deploy/ccm's Deployment,
// with $(POD_NAMESPACE) replaced by namespace and without --secure-port
// (the rig picks its own), and the environment it sets by value (NAME=value;
// not those taken from the Pod, such as POD_NAMESPACE).
func ShippedCCM(namespace string) (args, env []string, err error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(root, "deploy", "ccm", "deployment.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(data, &d); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "ccm" {
			continue
		}
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--secure-port=") {
				continue
			}
			args = append(args, strings.ReplaceAll(a, "$(POD_NAMESPACE)", namespace))
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				env = append(env, e.Name+"="+e.Value)
			}
		}
		return args, env, nil
	}
	return nil, nil, fmt.Errorf("%s has no container named ccm", path)
}

// StartCCMForTest starts ironlb-ccm and stops it when the test ends,
// printing its log tail if the test failed.
func StartCCMForTest(t testing.TB, opts CCMOptions) *procs.Process {
	t.Helper()
	if opts.LogDir == "" {
		opts.LogDir = t.TempDir()
	}
	if opts.Name == "" {
		opts.Name = "ironlb-ccm"
	}
	p, err := StartCCM(opts)
	if err != nil {
		t.Fatalf("starting %s: %v", opts.Name, err)
	}
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
		if t.Failed() {
			t.Logf("%s log tail:\n%s", p.Name, p.Tail(60))
		}
	})
	return p
}

// Eventually polls cond every 100ms until it returns nil or timeout passes,
// then returns its last error.
func Eventually(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || errors.Is(err, errStop) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
