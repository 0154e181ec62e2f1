package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ironlb/ironlb/test/cluster/machine"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
)

// state is what another process needs to use or tear down a cluster:
// Dir/state.json.
type state struct {
	ID        string   `json:"id"`
	Nodes     []string `json:"nodes"` // machine folders
	Client    string   `json:"client"`
	Router    string   `json:"router"`
	RouterDir string   `json:"routerDir"`
	Options   Options  `json:"options"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// SaveState writes the cluster's state file (Attach reads it).
func (c *Cluster) SaveState() error {
	if c.net == nil || c.net.router == nil {
		return errors.New("no network yet")
	}
	s := state{ID: c.id, Client: c.Client.Name, Router: c.net.router.Host.Name, RouterDir: c.net.router.Dir(), Options: c.opts}
	s.Options.Log = nil
	for _, m := range c.Nodes {
		s.Nodes = append(s.Nodes, m.Spec.Dir)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(c.Dir), b, 0o644)
}

// Attach returns the running cluster whose folder is dir, made by another
// process (Close on it tears it down as well).
func Attach(dir string) (*Cluster, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, fmt.Errorf("no cluster in %s: %w", dir, err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cluster state %s: %w", statePath(dir), err)
	}
	c := &Cluster{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig"), opts: s.Options, id: s.ID}
	c.Client = &netrig.Host{Name: s.Client, Role: "client"}
	c.net = &network{client: c.Client, router: frr.Attach(&netrig.Host{Name: s.Router, Role: "router"}, s.RouterDir)}
	for _, d := range s.Nodes {
		m, err := machine.Attach(d)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, m)
	}
	return c, nil
}

// Remove tears down what is left of the cluster in dir when no process
// holds it any more (its maker was killed): the machines, the network
// namespaces of dead processes (netrig.Sweep), the router's folder, dir.
func Remove(dir string) error {
	var errs []error
	b, err := os.ReadFile(statePath(dir))
	if err == nil {
		var s state
		if err := json.Unmarshal(b, &s); err == nil {
			if s.RouterDir != "" {
				errs = append(errs, os.RemoveAll(s.RouterDir))
			}
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			errs = append(errs, machine.Clean(filepath.Join(dir, e.Name())))
		}
	}
	errs = append(errs, netrig.Sweep(), os.RemoveAll(dir))
	return errors.Join(errs...)
}

// RouterNetNS is the router's network namespace.
func (c *Cluster) RouterNetNS() string { return c.net.router.Host.Name }

// RouterDir is the router's FRR folder (vtysh --vty_socket <dir>).
func (c *Cluster) RouterDir() string { return c.net.router.Dir() }

// NodeNames are the nodes' names, node-1 first.
func (c *Cluster) NodeNames() []string {
	var names []string
	for _, m := range c.Nodes {
		names = append(names, m.Spec.Name)
	}
	return names
}

// Router is the FRR router between the LAN and the outside segment.
func (c *Cluster) Router() *frr.Router { return c.net.router }
