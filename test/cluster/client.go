package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/netrig"
)

// RESTConfig is the admin's client configuration, connecting from the
// outside client's namespace (the API server, 192.0.2.11:6443, is on the
// nodes' LAN, behind the router).
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Dial = c.DialContext
	return cfg, nil
}

// Clientset is an admin client (see RESTConfig).
func (c *Cluster) Clientset() (kubernetes.Interface, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// DialContext opens a connection from the outside client's namespace.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netrig.Do(c.Client.Name, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Kubectl runs kubectl as the admin on the outside client and returns
// its standard output; stdin, when not nil, is its input. The error holds
// the command and its standard error.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", c.Client.Name, filepath.Join(c.opts.ToolsBin, "kubectl"), "--kubeconfig", c.Kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Stdin = stdin
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}
