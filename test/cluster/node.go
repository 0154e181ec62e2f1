package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/ironlb/ironlb/test/cluster/images"
	"github.com/ironlb/ironlb/test/cluster/machine"
)

// criSocket is containerd's CRI endpoint on every node.
const criSocket = "unix:///run/containerd/containerd.sock"

// containerdConfig is each node's /etc/containerd/config.toml (containerd
// 1.6, Debian bookworm): the CRI plugin with runc and the cgroupfs driver
// (the host mounts cgroup v1; the kubelet gets cgroupDriver: cgroupfs too),
// the pod sandbox image kubeadm v1.37 names, and Debian's CNI plugins.
// restrict_oom_score_adj: containers get no lower OOM score adjustment
// than containerd's own, because this machine's root lacks
// CAP_SYS_RESOURCE (runc fails to set the sandbox's -998 otherwise); the
// kubelet's own -999 fails with a warning.
var containerdConfig = fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`, images.PauseRef)

// kubeletService runs the kubelet as kubeadm's systemd drop-in
// (10-kubeadm.conf) does: the kubeconfig and config file kubeadm writes,
// the flags it puts in /var/lib/kubelet/kubeadm-flags.env and the user's
// /etc/default/kubelet; restarted a second after it exits (kubeadm's unit:
// 10 s), so that it starts as soon as kubeadm has written its
// configuration. kubeadm-flags.env is required (systemd's unit has it
// optional): there is no systemctl here for kubeadm to restart the kubelet
// once it wrote everything, and kubeadm writes config.yaml first, so a
// kubelet started between the two files ran without
// --cloud-provider=external and --node-ip, registered its Node without
// the uninitialized taint, and the CCM never initialized it (seen once
// in six HA bring-ups, on a kubeadm join --control-plane node).
var kubeletService = machine.Service{
	Name:    "kubelet",
	Command: []string{"/usr/bin/kubelet", "$KUBELET_KUBECONFIG_ARGS", "$KUBELET_CONFIG_ARGS", "$KUBELET_KUBEADM_ARGS", "$KUBELET_EXTRA_ARGS"},
	Env: []string{
		"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf",
		"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml",
	},
	EnvFiles:     []string{"/var/lib/kubelet/kubeadm-flags.env", "-/etc/default/kubelet"},
	RestartDelay: machine.Duration(1e9),
}

// kubeletSysctls are the kernel settings the kubelet sets at start unless
// they already have these values (protectKernelDefaults: false, the
// default): they are not per network namespace, so a kubelet of the rig
// would set them on the host, shared by every machine and whatever else
// runs here (kernel.panic_on_oops=1 turns an oops into a panic). Each node
// reads them as the kubelet wants them; the host keeps its own.
var kubeletSysctls = map[string]string{
	"vm.overcommit_memory":      "1",
	"vm.panic_on_oom":           "0",
	"kernel.panic":              "10",
	"kernel.panic_on_oops":      "1",
	"kernel.keys.root_maxkeys":  "1000000",
	"kernel.keys.root_maxbytes": "25000000",
}

// nodeSpec is the machine of node n: its folders kept on disk, kubeadm,
// the kubelet and kubectl from the tools folder (where a package would
// put them), Debian's containerd, runc and CNI plugins (from the host's
// root below the overlay), and containerd and the kubelet as services.
func (c *Cluster) nodeSpec(n int, netns string) (machine.Spec, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return machine.Spec{}, err
	}
	name := NodeName(n)
	var mounts []machine.Mount
	for _, b := range []string{"kubeadm", "kubelet", "kubectl"} {
		mounts = append(mounts, machine.Mount{Source: filepath.Join(c.opts.ToolsBin, b), Target: "/usr/bin/" + b, ReadOnly: true})
	}
	return machine.Spec{
		Name:   name,
		NetNS:  netns,
		Dir:    filepath.Join(c.Dir, name),
		Cgroup: c.cgroupBase + "/" + c.id + "-" + name,
		Persist: []string{
			"/etc/kubernetes", "/etc/kubeadm", "/etc/cni/net.d", "/var/lib/kubelet",
			"/var/lib/containerd", "/var/lib/etcd", "/var/log",
		},
		Mounts: mounts,
		// kube-proxy's DaemonSet mounts the host's /lib/modules.
		Dirs:    []string{"/lib/modules"},
		Sysctls: kubeletSysctls,
		Files: map[string]string{
			"/etc/hosts":                  fmt.Sprintf("127.0.0.1 localhost\n%s %s\n", NodeIP(n), name),
			"/etc/resolv.conf":            fmt.Sprintf("nameserver %s\n", RouterIP),
			"/etc/machine-id":             hex.EncodeToString(id) + "\n",
			"/etc/containerd/config.toml": containerdConfig,
		},
		Services: []machine.Service{
			{Name: "containerd", Command: []string{"/usr/bin/containerd", "--config", "/etc/containerd/config.toml"}},
			kubeletService,
		},
	}, nil
}
