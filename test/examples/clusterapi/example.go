// Package clusterapi makes deploy/examples/cluster-api/kubeadm-control-plane.yaml,
// a Cluster API example: a Cluster whose control-plane endpoint is IronLB's
// control-plane VIP and a KubeadmControlPlane that writes the control-plane
// speaker's static pod (cpvip.StaticPod, byte for byte) on every
// control-plane machine before kubeadm runs. It lives outside deploy/,
// which holds only manifests, and finds the file through the module's
// root above the working directory (see Path).
//
// Regenerate it with
//
//	go test ./test/examples/clusterapi -run TestExampleUpToDate -update
//
// (or go generate ./test/examples/clusterapi). TestExampleUpToDate fails
// while the file differs from Example's output; TestExampleServerSideDryRun
// checks it against Cluster API's CRDs.
package clusterapi

import (
	"bytes"
	"fmt"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/internal/version"
	"github.com/ironlb/ironlb/test/binaries"
)

//go:generate go test . -run TestExampleUpToDate -update

// File is the example's path in the repository.
const File = "deploy/examples/cluster-api/kubeadm-control-plane.yaml"

// Path returns File's absolute path in the source tree: below the
// go.mod of github.com/ironlb/ironlb above the working directory (a
// test's is its package's folder).
func Path() (string, error) {
	root, err := binaries.RepoRoot()
	if err != nil {
		return "", fmt.Errorf("locating %s: %w", File, err)
	}
	return filepath.Join(root, filepath.FromSlash(File)), nil
}

// The example's names and addresses: the rig's (docs/development.md, "A real cluster").
const (
	Namespace      = "ironlb-demo"
	clusterName    = "ironlb-demo"
	vip            = "192.0.2.250"
	apiServerPort  = 6443
	kubeVersion    = "v1.37.2"
	infraGroup     = "infrastructure.cluster.x-k8s.io"
	infraCluster   = "Metal3Cluster"
	infraMachine   = "Metal3MachineTemplate"
	controlPlane   = clusterName + "-control-plane"
	shutdownDelay  = "5s"
	staticPodOwner = "root:root"
	staticPodPerms = "0600"
)

// ManifestOptions are the static pod's options in the example: layer 2 on
// the interface whose subnet holds the VIP, with the machines' sa.key
// (Cluster API gives every control-plane machine the cluster's), and the
// speaker's image of the release this tree is (not of the binary that
// writes the file).
func ManifestOptions() cpvip.ManifestOptions {
	return cpvip.ManifestOptions{VIP: vip, Image: cpvip.ImageRepository + ":" + version.AppVersion}
}

const header = `# A Cluster API cluster whose kube-apiserver is reached through IronLB's
# control-plane VIP (docs/control-plane-vip.md): the
# Cluster's controlPlaneEndpoint is the VIP, and the KubeadmControlPlane
# writes the control-plane speaker's static pod on every control-plane
# machine before kubeadm init or join runs.
#
# Generated (test/examples/clusterapi, go generate): the static pod is
# kubectl ironlb control-plane manifest --vip %s --image %s
# byte for byte. The infrastructure kinds (Metal3 here) are your provider's;
# create the namespace first. Checked by server-side dry-run against Cluster
# API v1.14's CRDs (TestExampleServerSideDryRun).
`

type ref struct {
	APIGroup string `json:"apiGroup"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
}

type meta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
	Spec       any    `json:"spec"`
}

type arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type file struct {
	Path        string `json:"path"`
	Owner       string `json:"owner"`
	Permissions string `json:"permissions"`
	Content     string `json:"content"`
}

// Example returns the example's file.
func Example() ([]byte, error) {
	pod, err := cpvip.StaticPod(ManifestOptions())
	if err != nil {
		return nil, fmt.Errorf("the static pod: %w", err)
	}
	cluster := object{
		APIVersion: "cluster.x-k8s.io/v1beta2",
		Kind:       "Cluster",
		Metadata:   meta{clusterName, Namespace},
		Spec: map[string]any{
			"controlPlaneEndpoint": map[string]any{"host": vip, "port": apiServerPort},
			"controlPlaneRef":      ref{"controlplane.cluster.x-k8s.io", "KubeadmControlPlane", controlPlane},
			"infrastructureRef":    ref{infraGroup, infraCluster, clusterName},
		},
	}
	kcp := object{
		APIVersion: "controlplane.cluster.x-k8s.io/v1beta2",
		Kind:       "KubeadmControlPlane",
		Metadata:   meta{controlPlane, Namespace},
		Spec: map[string]any{
			"replicas": 3,
			"version":  kubeVersion,
			"machineTemplate": map[string]any{
				"spec": map[string]any{"infrastructureRef": ref{infraGroup, infraMachine, controlPlane}},
			},
			"kubeadmConfigSpec": map[string]any{
				"clusterConfiguration": map[string]any{
					"apiServer": map[string]any{
						// A kube-apiserver told to stop fails /readyz at once
						// but serves for this long: the speaker (3 failed
						// /readyz at 100 ms) hands the VIP over, or withdraws
						// its route, before the listener closes, so a
						// planned stop (a rollout replacing a machine)
						// refuses no connection.
						"extraArgs": []arg{{"shutdown-delay-duration", shutdownDelay}},
					},
				},
				"files": []file{{
					Path:        cpvip.ManifestPath,
					Owner:       staticPodOwner,
					Permissions: staticPodPerms,
					Content:     string(pod),
				}},
			},
		},
	}
	var out bytes.Buffer
	o := ManifestOptions()
	fmt.Fprintf(&out, header, o.VIP, o.Image)
	for _, obj := range []object{cluster, kcp} {
		data, err := yaml.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("marshalling the %s: %w", obj.Kind, err)
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	return out.Bytes(), nil
}
