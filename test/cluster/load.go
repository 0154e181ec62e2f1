package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ironlb/ironlb/test/cluster/images"
	"github.com/ironlb/ironlb/test/cluster/machine"
)

// phaseImages builds (or finds in the image cache) the images the nodes
// need: every node's (pause, kube-proxy, CoreDNS, agnhost) and the control
// plane's.
func (c *Cluster) phaseImages(ctx context.Context) error {
	node, err := images.Node(c.opts.ToolsBin)
	if err != nil {
		return err
	}
	c.layouts = map[string]string{}
	for _, img := range append(node, images.ControlPlane(c.opts.ToolsBin)...) {
		if c.opts.NoCoreDNS && img.Ref == images.CoreDNSRef {
			continue
		}
		dir, err := images.Cached(c.opts.ImageCache, img)
		if err != nil {
			return err
		}
		c.layouts[img.Ref] = dir
	}
	return nil
}

// phaseLoadImages imports the images into every node's containerd, as an
// administrator without a registry would (ctr images import); the control
// plane's only into the control-plane nodes.
func (c *Cluster) phaseLoadImages(ctx context.Context) error {
	cp := map[string]bool{images.EtcdRef: true}
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		cp[images.KubeRef(name)] = true
	}
	for ref, dir := range c.layouts {
		targets := c.Nodes
		if cp[ref] {
			targets = c.ControlPlaneNodes()
		}
		if err := LoadImage(ctx, dir, targets...); err != nil {
			return err
		}
	}
	return nil
}

// LoadImage imports an image into the containerd of each machine, in
// the namespace the kubelet uses (k8s.io), under the name its layout's
// index.json gives it (io.containerd.image.name): src is an OCI image
// layout folder, or a tar of one or a docker-save archive.
func LoadImage(ctx context.Context, src string, nodes ...*machine.Machine) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	for _, m := range nodes {
		cmd := m.Command(ctx, nil, "ctr", "--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", "-")
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return err
		}
		if st.IsDir() {
			err = images.Archive(in, src)
		} else {
			err = copyFile(in, src)
		}
		in.Close()
		if werr := cmd.Wait(); werr != nil || err != nil {
			return fmt.Errorf("importing %s into %s: %v %v: %s", filepath.Base(src), m.Spec.Name, err, werr, out.String())
		}
	}
	return nil
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// ReloadImages builds the rig's own images again (those whose files
// changed) and imports them into the nodes: after a change to package
// images, on a running cluster.
func (c *Cluster) ReloadImages(ctx context.Context) error {
	if err := c.phaseImages(ctx); err != nil {
		return err
	}
	return c.phaseLoadImages(ctx)
}
