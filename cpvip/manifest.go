package cpvip

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/internal/version"
)

// ManifestPath is where the control-plane speaker's static pod goes on
// every control-plane node.
const ManifestPath = "/etc/kubernetes/manifests/ironlb-control-plane.yaml"

// ImageRepository is the speaker's image; the control-plane speaker is its
// control-plane subcommand.
const ImageRepository = "ghcr.io/ironlb/ironlb-speaker"

// What the static pod runs with: the speaker's defaults, written out so
// that the pod's ports, probes and mounts agree with its arguments.
const (
	podName            = "ironlb-control-plane"
	podKeyFile         = "/etc/kubernetes/pki/sa.key"
	podAPIServerCAFile = "/etc/kubernetes/pki/ca.crt"
	podPort            = DefaultPort
	podHealthPort      = DefaultHealthPort
	// podPriority is system-node-critical's value; kubeadm writes it into
	// its own static pods too, next to the class's name.
	podPriority = 2000001000
)

// ManifestOptions are what differs between clusters in the static pod.
// The zero value of each optional field means the speaker's default.
type ManifestOptions struct {
	// VIP is the control-plane VIP (required): an IPv4 or IPv6 address.
	VIP string
	// Mode is "l2" (the default when empty) or "bgp".
	Mode string
	// Interface is the interface to serve the VIP on; empty: the one whose
	// subnet holds the VIP (l2), the one the route to the first BGP peer
	// leaves by (bgp).
	Interface string
	// KeyFiles are the election key's files on the node; the first signs,
	// each verifies (layer 2 only). Empty: kubeadm's /etc/kubernetes/pki/sa.key.
	KeyFiles []string
	// Image is the speaker's image reference, with its registry and a tag
	// or digest. Empty: DefaultImage().
	Image string
	// BGPPeers, BGPPeerASN, BGPASN and BGPPasswordFile are the BGP mode's
	// sessions: the routers' addresses (one or more), their AS, the
	// nodes' AS and, optionally, the file on the node holding the TCP MD5
	// password.
	BGPPeers        []string
	BGPPeerASN      uint32
	BGPASN          uint32
	BGPPasswordFile string
}

// DefaultImage returns the speaker's image at this release's version,
// tagged the way deploy/kustomization.yaml tags it.
func DefaultImage() string {
	return ImageRepository + ":" + version.ImageTag()
}

// StaticPod returns the control-plane speaker's static pod for ManifestPath
// as YAML, the same file for every control-plane node of the cluster. It
// rejects options the speaker would not run with.
func StaticPod(o ManifestOptions) ([]byte, error) {
	v, err := o.validate()
	if err != nil {
		return nil, err
	}
	body, err := yaml.Marshal(v.pod())
	if err != nil {
		return nil, fmt.Errorf("marshalling the static pod: %w", err)
	}
	return append([]byte(v.header()), body...), nil
}

// Args returns the ironlb-speaker arguments the static pod runs with,
// starting with the control-plane subcommand.
func Args(o ManifestOptions) ([]string, error) {
	v, err := o.validate()
	if err != nil {
		return nil, err
	}
	return v.args(), nil
}

func (v validOptions) header() string {
	what := "# One control-plane node whose kube-apiserver is ready holds the VIP and\n" +
		"# answers ARP/NDP for it, elected among the nodes over the LAN without the\n" +
		"# Kubernetes API (messages signed with a key derived from --key-file).\n"
	if v.mode == ModeBGP {
		what = "# Every control-plane node whose kube-apiserver is ready advertises the VIP\n" +
			"# to its BGP peers, with BFD, and withdraws it when it stops being ready.\n"
	}
	return "# IronLB's control-plane VIP: ironlb-speaker control-plane serves the\n" +
		"# kube-apiserver's address " + v.vip.String() + " (" + v.mode + ").\n" + what +
		"# A static pod, the same file on every control-plane node: put it at\n" +
		"# " + ManifestPath + "\n" +
		"# before kubeadm init and before kubeadm join --control-plane. Written by\n" +
		"# kubectl ironlb control-plane manifest: run it again rather than edit.\n"
}

func (v validOptions) args() []string {
	args := []string{
		"control-plane",
		"--vip=" + v.vip.String(),
		"--mode=" + v.mode,
	}
	if v.ifc != "" {
		args = append(args, "--interface="+v.ifc)
	}
	for _, f := range v.keyFiles {
		args = append(args, "--key-file="+f)
	}
	args = append(args,
		"--apiserver-ca-file="+podAPIServerCAFile,
		"--port="+strconv.Itoa(podPort),
		"--health-port="+strconv.Itoa(podHealthPort),
	)
	if v.mode == ModeBGP {
		for _, p := range v.bgpPeers {
			args = append(args, "--bgp-peer="+p.String())
		}
		args = append(args,
			"--bgp-peer-asn="+strconv.FormatUint(uint64(v.bgpPeerASN), 10),
			"--bgp-asn="+strconv.FormatUint(uint64(v.bgpASN), 10),
		)
		if v.bgpPasswordFile != "" {
			args = append(args, "--bgp-password-file="+v.bgpPasswordFile)
		}
	}
	return args
}

func (v validOptions) pod() *corev1.Pod {
	labels := map[string]string{
		"component":                 podName,
		"tier":                      "control-plane",
		"app.kubernetes.io/name":    podName,
		"app.kubernetes.io/part-of": "ironlb",
	}
	var mounts []corev1.VolumeMount
	var volumes []corev1.Volume
	mount := func(name, path string) {
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: path, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr.To(corev1.HostPathFile)},
		}})
	}
	for i, f := range v.keyFiles {
		mount("election-key-"+strconv.Itoa(i+1), f)
	}
	mount("apiserver-ca", podAPIServerCAFile)
	if v.bgpPasswordFile != "" {
		mount("bgp-password", v.bgpPasswordFile)
	}
	ports := []corev1.ContainerPort{
		{Name: "election", ContainerPort: podPort, Protocol: corev1.ProtocolUDP},
		{Name: "health", ContainerPort: podHealthPort, Protocol: corev1.ProtocolTCP},
	}
	if v.mode == ModeBGP {
		// No election in BGP mode: the UDP port stays closed.
		ports = ports[1:]
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      podName,
			Namespace: metav1.NamespaceSystem,
			Labels:    labels,
		},
		Spec: corev1.PodSpec{
			// The VIP is served from the node's own network namespace: its
			// lo holds the VIP, its interface answers ARP/NDP or carries
			// the BGP sessions.
			HostNetwork:                   true,
			PriorityClassName:             "system-node-critical",
			Priority:                      ptr.To[int32](podPriority),
			EnableServiceLinks:            ptr.To(false),
			AutomountServiceAccountToken:  ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](10),
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "speaker",
				Image: v.image,
				Args:  v.args(),
				Env: []corev1.EnvVar{{
					Name: "NODE_NAME",
					ValueFrom: &corev1.EnvVarSource{
						FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"},
					},
				}},
				Ports: ports,
				LivenessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Host: "127.0.0.1", Path: "/healthz", Port: intstr.FromString("health"),
					}},
					InitialDelaySeconds: 5,
					PeriodSeconds:       10,
					FailureThreshold:    3,
				},
				// 100m of CPU: its weight against the kube-apiserver
				// (250m) and etcd (100m) beside it when the node is busy,
				// so that a message is not late by a dead interval.
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceCPU:    resource.MustParse("100m"),
						corev1.ResourceMemory: resource.MustParse("32Mi"),
					},
					Limits: corev1.ResourceList{
						corev1.ResourceMemory: resource.MustParse("128Mi"),
					},
				},
				// Root (UID 0) to read kubeadm's sa.key (0600 root) and to
				// hold NET_RAW (ARP/NDP raw sockets) and NET_ADMIN (the VIP
				// on lo); every other capability of root is dropped, the
				// root filesystem is read-only, no privilege escalation.
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:                ptr.To[int64](0),
					RunAsNonRoot:             ptr.To(false),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"NET_RAW", "NET_ADMIN"},
					},
				},
				VolumeMounts: mounts,
			}},
			Volumes: volumes,
		},
	}
}

// ModeL2 and ModeBGP are the control-plane speaker's modes.
const (
	ModeL2  = "l2"
	ModeBGP = "bgp"
)
