// Command ironlb-cluster makes and runs the real-cluster rig (package
// test/cluster): make cluster runs "ironlb-cluster up", make cluster-down
// "ironlb-cluster down".
//
//	ironlb-cluster up [-nodes 3] [-control-planes 1] [-config bgp|l2|none]
//	                                                    start a cluster (a daemon holds it) and print how to use it;
//	                                                    -control-planes 3: a highly available control plane behind
//	                                                    IronLB's control-plane VIP, 192.0.2.250:6443
//	ironlb-cluster down                                 tear it down
//	ironlb-cluster status                               nodes, pods, the Services' addresses
//	ironlb-cluster exec node-2|client|router -- cmd...   run a command on a node, the outside client or the router
//	ironlb-cluster load-image <oci-layout|tar>...        import images into every node's containerd
//	ironlb-cluster configure bgp|l2                      switch IronLB's pool (and BGP peer)
//	ironlb-cluster reload-images                         rebuild the rig's own images (package images) and load them
//
// The cluster lives in -dir (default .cache/cluster of the checkout).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/cluster"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-cluster:", err)
		os.Exit(1)
	}
}

// settings are the flags every command takes.
type settings struct {
	dir, tools, images, imageCache, repo string
	keep                                 bool
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: ironlb-cluster up|down|status|exec|load-image|configure (see docs/development.md, A real cluster)")
	}
	root, _ := binaries.RepoRoot()
	var s settings
	fs := flag.NewFlagSet("ironlb-cluster "+args[0], flag.ContinueOnError)
	fs.StringVar(&s.dir, "dir", filepath.Join(root, ".cache", "cluster"), "the cluster's folder")
	fs.StringVar(&s.tools, "tools", filepath.Join(root, ".cache", "bin"), "the Kubernetes binaries (make cluster-tools)")
	fs.StringVar(&s.images, "ironlb-images", filepath.Join(root, "bin", "images"), "IronLB's OCI image layouts (make image)")
	fs.StringVar(&s.imageCache, "image-cache", filepath.Join(root, ".cache", "cluster-images"), "where the cluster's own images are kept")
	fs.StringVar(&s.repo, "repo", root, "IronLB's checkout (deploy/)")
	nodes := fs.Int("nodes", 3, "up: how many nodes (node-1 to node-<control-planes> run the control plane, the rest are workers)")
	controlPlanes := fs.Int("control-planes", 1, "up: how many of the nodes run the control plane; more than 1 puts it behind IronLB's control-plane VIP ("+cluster.ControlPlaneVIP.String()+":6443, held by the ironlb-speaker control-plane static pod)")
	config := fs.String("config", cluster.BGPConfig, "up: IronLB's configuration: bgp, l2 or none (no IronLB; with -control-planes > 1, IronLB without a pool)")
	fs.BoolVar(&s.keep, "keep", false, "up: leave a cluster that failed to come up, to look at")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "up":
		return up(ctx, s, *nodes, *controlPlanes, *config)
	case "serve":
		return serve(ctx, s, *nodes, *controlPlanes, *config)
	case "down":
		return down(s)
	case "status":
		return status(ctx, s)
	case "exec":
		return execIn(ctx, s, fs.Args())
	case "load-image":
		c, err := cluster.Attach(s.dir)
		if err != nil {
			return err
		}
		for _, src := range fs.Args() {
			if err := cluster.LoadImage(ctx, src, c.Nodes...); err != nil {
				return err
			}
			fmt.Printf("loaded %s into %d nodes\n", src, len(c.Nodes))
		}
		return nil
	case "reload-images":
		c, err := cluster.Attach(s.dir)
		if err != nil {
			return err
		}
		return c.ReloadImages(ctx)
	case "configure":
		c, err := cluster.Attach(s.dir)
		if err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: ironlb-cluster configure bgp|l2")
		}
		return c.Configure(ctx, fs.Arg(0))
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func daemonPidPath(dir string) string { return filepath.Join(dir, "daemon.pid") }
func readyPath(dir string) string     { return filepath.Join(dir, "ready") }
func logPath(dir string) string       { return filepath.Join(dir, "cluster.log") }

// daemon returns the pid of the process holding the cluster in dir, if it
// runs.
func daemon(dir string) (int, bool) {
	b, err := os.ReadFile(daemonPidPath(dir))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, err == nil && strings.Contains(string(cmdline), "serve")
}

// up starts "ironlb-cluster serve" as a daemon that builds the cluster and
// holds it (its namespaces carry its pid; it relays the API server to
// this host's loopback), shows its progress and waits until it is ready.
func up(ctx context.Context, s settings, nodes, controlPlanes int, config string) error {
	if _, ok := daemon(s.dir); ok {
		if _, err := os.Stat(readyPath(s.dir)); err == nil {
			fmt.Printf("A cluster is already running in %s.\n", s.dir)
			return usage(s)
		}
		return fmt.Errorf("a cluster is being made in %s (see %s), or run make cluster-down", s.dir, logPath(s.dir))
	}
	if err := cluster.Remove(s.dir); err != nil {
		return fmt.Errorf("removing the remains of a previous cluster: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.dir), 0o755); err != nil {
		return err
	}
	// The daemon's log lives beside the cluster's folder until the cluster
	// makes it.
	log, err := os.Create(s.dir + ".log")
	if err != nil {
		return err
	}
	defer log.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "serve", "-dir", s.dir, "-tools", s.tools, "-ironlb-images", s.images,
		"-image-cache", s.imageCache, "-repo", s.repo, "-nodes", strconv.Itoa(nodes), "-control-planes", strconv.Itoa(controlPlanes),
		"-config", config, "-keep="+strconv.FormatBool(s.keep))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Follow the log until the daemon says it is ready or exits.
	f, err := os.Open(s.dir + ".log")
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		_, _ = io.Copy(os.Stdout, f)
		if _, err := os.Stat(readyPath(s.dir)); err == nil {
			_, _ = io.Copy(os.Stdout, f)
			return usage(s)
		}
		select {
		case err := <-exited:
			_, _ = io.Copy(os.Stdout, f)
			return fmt.Errorf("the cluster did not come up (%v); its log: %s.log", err, s.dir)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve builds the cluster, then holds it until SIGTERM: it relays
// 127.0.0.1:<port> to the API server for this host's kubectl, and tears
// everything down when told to stop.
func serve(ctx context.Context, s settings, nodes, controlPlanes int, config string) error {
	opts := cluster.Options{
		Dir: s.dir, Nodes: nodes, ControlPlanes: controlPlanes, ToolsBin: s.tools, ImageCache: s.imageCache, RepoRoot: s.repo,
		IronLBImages: s.images, Log: os.Stdout, KeepOnFailure: s.keep,
	}
	if config == "none" && controlPlanes <= 1 {
		opts.IronLBImages = ""
	}
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("tearing the cluster down")
		if err := c.Close(); err != nil {
			fmt.Println("tear-down:", err)
		}
		_ = os.Remove(s.dir + ".log")
	}()
	if err := os.WriteFile(daemonPidPath(s.dir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	if err := c.SaveState(); err != nil {
		return err
	}
	if config != "none" {
		fmt.Printf("configuring IronLB: %s\n", config)
		if err := c.Configure(ctx, config); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := writeHostKubeconfig(c, ln.Addr().String()); err != nil {
		return err
	}
	go relay(ctx, ln, c, net.JoinHostPort(c.Endpoint().String(), "6443"))
	if err := os.WriteFile(readyPath(s.dir), nil, 0o644); err != nil {
		return err
	}
	fmt.Println("cluster ready")
	<-ctx.Done()
	return nil
}

// writeHostKubeconfig writes kubeconfig-host: the admin's kubeconfig with
// the relay as server (the API server's certificate names "kubernetes").
func writeHostKubeconfig(c *cluster.Cluster, addr string) error {
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + addr
		cl.TLSServerName = "kubernetes"
	}
	return clientcmd.WriteToFile(*cfg, filepath.Join(c.Dir, "kubeconfig-host"))
}

// relay forwards each connection to ln to target, dialled from the
// outside client's namespace.
func relay(ctx context.Context, ln net.Listener, c *cluster.Cluster, target string) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			up, err := c.DialContext(ctx, "tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
			go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
			<-done
		}()
	}
}

// down stops the daemon, which tears the cluster down; without one it
// removes what is left.
func down(s settings) error {
	pid, ok := daemon(s.dir)
	if !ok {
		fmt.Printf("no cluster daemon runs; removing what is left in %s\n", s.dir)
		return cluster.Remove(s.dir)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, ok := daemon(s.dir); !ok {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Whatever the daemon could not remove.
	if err := cluster.Remove(s.dir); err != nil {
		return err
	}
	fmt.Printf("cluster in %s torn down\n", s.dir)
	return nil
}

// usage prints how to use the running cluster.
func usage(s settings) error {
	self := "bin/ironlb-cluster"
	routerDir := "<dir>"
	shape := "node-1 (control plane) and workers"
	if c, err := cluster.Attach(s.dir); err == nil {
		routerDir = c.RouterDir()
		if cps := len(c.ControlPlaneNodes()); cps > 1 {
			shape = fmt.Sprintf("node-1 to node-%d control plane behind the control-plane VIP https://%s:6443 (kubectl ironlb status shows who holds it), the rest workers", cps, c.Endpoint())
		}
	}
	fmt.Printf(`
The cluster is up: Kubernetes %s, kubeadm, %s, IronLB installed.
  export KUBECONFIG=%s    # kubectl from this host (through a relay on loopback)
  kubectl get nodes -o wide; kubectl -n ironlb-system get pods
  %s exec node-2 -- ctr -n k8s.io containers ls              # a command on a node (its namespaces and root)
  %s exec client -- curl -s http://<EXTERNAL-IP>/             # the outside host behind the router (%s)
  %s exec router -- vtysh --vty_socket %s -c 'show ip route'   # the router (FRR)
  %s load-image <OCI layout folder or tar>                   # into every node's containerd (namespace k8s.io)
  %s configure l2|bgp                                         # IronLB's pool: layer 2 on the LAN, or BGP via the router
  %s status
  make cluster-down
Logs: %s (kubelet, containerd and kubeadm logs under <node>/log/).
`, "v1.37.2", shape, filepath.Join(s.dir, "kubeconfig-host"), self, self, cluster.ClientIP, self, routerDir, self, self, self, s.dir)
	return nil
}

// execIn runs a command on a node (its machine), the client or the
// router (their network namespaces).
func execIn(ctx context.Context, s settings, args []string) error {
	if len(args) < 2 {
		return errors.New("usage: ironlb-cluster exec node-N|client|router -- command...")
	}
	target, cmdArgs := args[0], args[1:]
	if cmdArgs[0] == "--" {
		cmdArgs = cmdArgs[1:]
	}
	c, err := cluster.Attach(s.dir)
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	switch target {
	case "client":
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.Client.Name}, cmdArgs...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "PATH="+s.tools+":"+os.Getenv("PATH"))
	case "router":
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.RouterNetNS()}, cmdArgs...)...)
	default:
		var found bool
		for _, m := range c.Nodes {
			if m.Spec.Name == target {
				env := []string{"TERM=" + os.Getenv("TERM")}
				if _, err := os.Stat(m.HostPath("/etc/kubernetes/admin.conf")); err == nil {
					env = append(env, "KUBECONFIG=/etc/kubernetes/admin.conf") // the control plane's
				}
				cmd = m.Command(ctx, env, cmdArgs...)
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no node %q (nodes: %s)", target, strings.Join(c.NodeNames(), ", "))
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		os.Exit(exitErr.ExitCode())
	}
	return err
}

// status prints the cluster's nodes, pods and LoadBalancer Services.
func status(ctx context.Context, s settings) error {
	c, err := cluster.Attach(s.dir)
	if err != nil {
		return err
	}
	fmt.Printf("cluster in %s; router folder (vtysh --vty_socket) %s; client namespace %s\n", s.dir, c.RouterDir(), c.Client.Name)
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "services", "-A", "--field-selector", "spec.type=LoadBalancer"},
		{"get", "ippools,bgppeers"},
	} {
		out, err := c.Kubectl(ctx, nil, args...)
		if err != nil {
			return err
		}
		fmt.Println(out)
	}
	return nil
}
