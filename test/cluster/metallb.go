package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/cluster/images"
)

// metallbNamespace is where metallb-native.yaml installs MetalLB.
const metallbNamespace = "metallb-system"

// metallbImage matches the image lines of MetalLB's manifest.
var metallbImage = regexp.MustCompile(`(?m)^\s*image:\s*(\S+)\s*$`)

// InstallMetalLB installs MetalLB (MetalLBVersion) beside IronLB as its
// documentation's "installation by manifest" does: kubectl apply
// --server-side -f config/manifests/metallb-native.yaml from its module.
// Its images, which MetalLB publishes on quay.io only, are built here
// from its module (BuildMetalLB, cached under the repository's
// .cache/metallb) and imported into every node under the names the
// manifest gives, which it pulls IfNotPresent: no pull happens. The
// memberlist Secret the speakers mount is made by MetalLB's controller
// (METALLB_ML_SECRET_NAME). It returns once the controller is available,
// a speaker ready on every node and the validating webhook answers (a
// server-side dry run of an IPAddressPool passes through it).
func (c *Cluster) InstallMetalLB(ctx context.Context) error {
	start := time.Now()
	bin, err := BuildMetalLB(ctx, filepath.Join(c.opts.RepoRoot, ".cache", "metallb"))
	if err != nil {
		return err
	}
	src, err := MetalLBModuleDir(ctx)
	if err != nil {
		return err
	}
	manifest := filepath.Join(src, "config", "manifests", "metallb-native.yaml")
	if err := checkMetalLBManifest(manifest); err != nil {
		return err
	}
	for _, img := range images.MetalLB(bin, MetalLBVersion) {
		dir, err := images.Cached(c.opts.ImageCache, img)
		if err != nil {
			return err
		}
		if err := LoadImage(ctx, dir, c.Nodes...); err != nil {
			return err
		}
	}
	c.logf("MetalLB %s: images built and loaded (%s)", MetalLBVersion, time.Since(start).Round(time.Second))
	if _, err := c.Kubectl(ctx, nil, "apply", "--server-side", "-f", manifest); err != nil {
		return fmt.Errorf("installing MetalLB: %w", err)
	}
	if err := c.waitMetalLB(ctx, 5*time.Minute); err != nil {
		return fmt.Errorf("MetalLB %s: %w", MetalLBVersion, err)
	}
	c.logf("MetalLB %s: installed and ready (%s)", MetalLBVersion, time.Since(start).Round(time.Second))
	return nil
}

// checkMetalLBManifest makes sure the manifest runs the images
// InstallMetalLB loads, and never pulls them: an image line other than
// the two, or imagePullPolicy Always, would reach for quay.io.
func checkMetalLBManifest(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	want := map[string]bool{images.MetalLBControllerRef(MetalLBVersion): true, images.MetalLBSpeakerRef(MetalLBVersion): true}
	seen := map[string]bool{}
	for _, m := range metallbImage.FindAllStringSubmatch(string(b), -1) {
		if !want[m[1]] {
			return fmt.Errorf("%s runs image %s, which is not built here", path, m[1])
		}
		seen[m[1]] = true
	}
	if len(seen) != len(want) {
		return fmt.Errorf("%s runs images %v, want %v", path, seen, want)
	}
	if strings.Contains(string(b), "imagePullPolicy: Always") {
		return fmt.Errorf("%s pulls its images Always: the loaded images would not be used", path)
	}
	return nil
}

// metallbProbePool is what the webhook check dry-runs: a valid pool on
// the LAN, never created.
const metallbProbePool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: webhook-probe
  namespace: metallb-system
spec:
  addresses: ["192.0.2.128/32"]
`

// waitMetalLB waits until MetalLB's controller Deployment is available,
// its memberlist Secret exists, its speaker DaemonSet is ready on every
// node and its validating webhook answers.
func (c *Cluster) waitMetalLB(ctx context.Context, timeout time.Duration) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	return poll(ctx, timeout, func() error {
		d, err := cs.AppsV1().Deployments(metallbNamespace).Get(ctx, "controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !deploymentAvailable(d) {
			return fmt.Errorf("deployment controller: %d of %d replicas available", d.Status.AvailableReplicas, d.Status.Replicas)
		}
		if _, err := cs.CoreV1().Secrets(metallbNamespace).Get(ctx, "memberlist", metav1.GetOptions{}); err != nil {
			return fmt.Errorf("the speakers' memberlist secret: %w", err)
		}
		ds, err := cs.AppsV1().DaemonSets(metallbNamespace).Get(ctx, "speaker", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.DesiredNumberScheduled != int32(len(c.Nodes)) || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
			return fmt.Errorf("daemonset speaker: %d of %d ready", ds.Status.NumberReady, len(c.Nodes))
		}
		if _, err := c.Kubectl(ctx, strings.NewReader(metallbProbePool), "create", "--dry-run=server", "-f", "-"); err != nil {
			return fmt.Errorf("the validating webhook: %w", err)
		}
		return nil
	})
}
