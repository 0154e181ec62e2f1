package cpvip

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/internal/version"
)

// parsePod reads StaticPod's output back, strictly: a field the Pod type
// does not have fails.
func parsePod(t *testing.T, data []byte) *corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("the static pod does not read back as a Pod: %v\n%s", err, data)
	}
	return &pod
}

type hostFile struct{ Volume, Path string }

func hostFiles(t *testing.T, pod *corev1.Pod) []hostFile {
	t.Helper()
	c := pod.Spec.Containers[0]
	var got []hostFile
	for i, v := range pod.Spec.Volumes {
		hp := v.HostPath
		if hp == nil || hp.Type == nil || *hp.Type != corev1.HostPathFile {
			t.Errorf("volume %s is not a hostPath of type File", v.Name)
			continue
		}
		m := c.VolumeMounts[i]
		if m.Name != v.Name || m.MountPath != hp.Path || !m.ReadOnly {
			t.Errorf("volume %s (%s) is mounted as %+v, not read-only at the same path", v.Name, hp.Path, m)
		}
		got = append(got, hostFile{v.Name, hp.Path})
	}
	if len(c.VolumeMounts) != len(pod.Spec.Volumes) {
		t.Errorf("%d volumes, %d mounts", len(pod.Spec.Volumes), len(c.VolumeMounts))
	}
	return got
}

func TestStaticPod(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      ManifestOptions
		wantImage string
		wantArgs  []string
		wantFiles []hostFile
		wantPorts []string
	}{{
		name:      "layer 2, defaults",
		opts:      ManifestOptions{VIP: "192.0.2.250"},
		wantImage: "ghcr.io/ironlb/ironlb-speaker:" + version.AppVersion,
		wantArgs: []string{"control-plane", "--vip=192.0.2.250", "--mode=l2",
			"--key-file=/etc/kubernetes/pki/sa.key", "--apiserver-ca-file=/etc/kubernetes/pki/ca.crt",
			"--port=7477", "--health-port=7476"},
		wantFiles: []hostFile{{"election-key-1", "/etc/kubernetes/pki/sa.key"}, {"apiserver-ca", "/etc/kubernetes/pki/ca.crt"}},
		wantPorts: []string{"election 7477/UDP", "health 7476/TCP"},
	}, {
		name: "layer 2, IPv6, interface, two keys (a rotation), own image",
		opts: ManifestOptions{VIP: "2001:DB8::0:fa", Mode: "l2", Interface: "bond0.100",
			KeyFiles: []string{"/etc/ironlb/cp-new.key", "/etc/kubernetes/pki/sa.key"},
			Image:    "registry.example:5000/ironlb/ironlb-speaker@sha256:" + strings.Repeat("ab", 32)},
		wantImage: "registry.example:5000/ironlb/ironlb-speaker@sha256:" + strings.Repeat("ab", 32),
		wantArgs: []string{"control-plane", "--vip=2001:db8::fa", "--mode=l2", "--interface=bond0.100",
			"--key-file=/etc/ironlb/cp-new.key", "--key-file=/etc/kubernetes/pki/sa.key",
			"--apiserver-ca-file=/etc/kubernetes/pki/ca.crt", "--port=7477", "--health-port=7476"},
		wantFiles: []hostFile{{"election-key-1", "/etc/ironlb/cp-new.key"}, {"election-key-2", "/etc/kubernetes/pki/sa.key"},
			{"apiserver-ca", "/etc/kubernetes/pki/ca.crt"}},
		wantPorts: []string{"election 7477/UDP", "health 7476/TCP"},
	}, {
		name: "BGP, two peers, password",
		opts: ManifestOptions{VIP: "198.51.100.62", Mode: "bgp", BGPPeers: []string{"192.0.2.1", "2001:db8::1"},
			BGPPeerASN: 64512, BGPASN: 64513, BGPPasswordFile: "/etc/ironlb/bgp-password", Image: "ghcr.io/ironlb/ironlb-speaker:v9.9.9"},
		wantImage: "ghcr.io/ironlb/ironlb-speaker:v9.9.9",
		wantArgs: []string{"control-plane", "--vip=198.51.100.62", "--mode=bgp",
			"--apiserver-ca-file=/etc/kubernetes/pki/ca.crt", "--port=7477", "--health-port=7476",
			"--bgp-peer=192.0.2.1", "--bgp-peer=2001:db8::1", "--bgp-peer-asn=64512", "--bgp-asn=64513",
			"--bgp-password-file=/etc/ironlb/bgp-password"},
		wantFiles: []hostFile{{"apiserver-ca", "/etc/kubernetes/pki/ca.crt"}, {"bgp-password", "/etc/ironlb/bgp-password"}},
		wantPorts: []string{"health 7476/TCP"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := StaticPod(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "# IronLB's control-plane VIP") || !strings.Contains(string(data), "\n# "+ManifestPath+"\n") {
				t.Errorf("the header does not say what the file is and where it goes:\n%s", data)
			}
			pod := parsePod(t, data)
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			if c.Image != tc.wantImage {
				t.Errorf("image %q, want %q", c.Image, tc.wantImage)
			}
			if diff := cmp.Diff(tc.wantArgs, c.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			args, err := Args(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.Args, args); diff != "" {
				t.Errorf("Args and the pod's args differ (-pod +Args):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantFiles, hostFiles(t, pod)); diff != "" {
				t.Errorf("host files (-want +got):\n%s", diff)
			}
			var ports []string
			for _, p := range c.Ports {
				ports = append(ports, fmt.Sprintf("%s %d/%s", p.Name, p.ContainerPort, p.Protocol))
			}
			if diff := cmp.Diff(tc.wantPorts, ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			checkPodInvariants(t, pod)
		})
	}
}

// checkPodInvariants: what every control-plane speaker pod must be,
// whatever the options.
func checkPodInvariants(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	type meta struct {
		APIVersion, Kind, Name, Namespace, PriorityClassName string
		HostNetwork                                          bool
		Priority                                             *int32
	}
	want := meta{"v1", "Pod", "ironlb-control-plane", "kube-system", "system-node-critical", true, ptr.To[int32](2000001000)}
	got := meta{pod.APIVersion, pod.Kind, pod.Name, pod.Namespace, pod.Spec.PriorityClassName, pod.Spec.HostNetwork, pod.Spec.Priority}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pod (-want +got):\n%s", diff)
	}
	c := pod.Spec.Containers[0]
	wantEnv := []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}
	if diff := cmp.Diff(wantEnv, c.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	wantSC := &corev1.SecurityContext{
		RunAsUser: ptr.To[int64](0), RunAsNonRoot: ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_RAW", "NET_ADMIN"}},
	}
	if diff := cmp.Diff(wantSC, c.SecurityContext); diff != "" {
		t.Errorf("securityContext (-want +got):\n%s", diff)
	}
	lp := c.LivenessProbe
	if lp == nil || lp.HTTPGet == nil || lp.HTTPGet.Path != "/healthz" || lp.HTTPGet.Port.StrVal != "health" {
		t.Errorf("liveness probe %+v, want GET /healthz on the port named health", lp)
	}
	health := false
	for _, p := range c.Ports {
		health = health || (p.Name == "health" && p.ContainerPort == 7476 && p.Protocol == corev1.ProtocolTCP)
	}
	if !health {
		t.Errorf("no port health 7476/TCP in %+v", c.Ports)
	}
}

func TestStaticPodRejects(t *testing.T) {
	bgp := func(o ManifestOptions) ManifestOptions {
		o.Mode = "bgp"
		if o.BGPPeers == nil {
			o.BGPPeers = []string{"192.0.2.1"}
		}
		if o.BGPPeerASN == 0 {
			o.BGPPeerASN = 64512
		}
		if o.BGPASN == 0 {
			o.BGPASN = 64513
		}
		return o
	}
	for _, tc := range []struct {
		name       string
		opts       ManifestOptions
		wantOption string
	}{
		{"no VIP", ManifestOptions{}, "vip"},
		{"VIP not an address", ManifestOptions{VIP: "192.0.2.250/32"}, "vip"},
		{"VIP a host name", ManifestOptions{VIP: "api.example"}, "vip"},
		{"VIP with a zone", ManifestOptions{VIP: "fe80::1%eth0"}, "vip"},
		{"VIP IPv4-mapped", ManifestOptions{VIP: "::ffff:192.0.2.250"}, "vip"},
		{"VIP unspecified", ManifestOptions{VIP: "0.0.0.0"}, "vip"},
		{"VIP loopback", ManifestOptions{VIP: "127.0.0.1"}, "vip"},
		{"VIP multicast", ManifestOptions{VIP: "ff02::1"}, "vip"},
		{"VIP link-local", ManifestOptions{VIP: "169.254.1.1"}, "vip"},
		{"VIP broadcast", ManifestOptions{VIP: "255.255.255.255"}, "vip"},
		{"unknown mode", ManifestOptions{VIP: "192.0.2.250", Mode: "arp"}, "mode"},
		{"interface too long", ManifestOptions{VIP: "192.0.2.250", Interface: "abcdefghijklmnop"}, "interface"},
		{"interface with a slash", ManifestOptions{VIP: "192.0.2.250", Interface: "eth/0"}, "interface"},
		{"interface with a colon", ManifestOptions{VIP: "192.0.2.250", Interface: "eth0:1"}, "interface"},
		{"interface with a space", ManifestOptions{VIP: "192.0.2.250", Interface: "eth 0"}, "interface"},
		{"interface with a newline", ManifestOptions{VIP: "192.0.2.250", Interface: "eth0\n- --x"}, "interface"},
		{"interface dot-dot", ManifestOptions{VIP: "192.0.2.250", Interface: ".."}, "interface"},
		{"interface non-ASCII", ManifestOptions{VIP: "192.0.2.250", Interface: "ethé"}, "interface"},
		{"key file relative", ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"sa.key"}}, "key-file"},
		{"key file not clean", ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"/etc/kubernetes/../sa.key"}}, "key-file"},
		{"key file twice", ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"/a.key", "/a.key"}}, "key-file"},
		{"key file is the CA", ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"/etc/kubernetes/pki/ca.crt"}}, "key-file"},
		{"too many key files", ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"/1", "/2", "/3", "/4", "/5"}}, "key-file"},
		{"image without a tag", ManifestOptions{VIP: "192.0.2.250", Image: "ghcr.io/ironlb/ironlb-speaker"}, "image"},
		{"image without a registry", ManifestOptions{VIP: "192.0.2.250", Image: "ironlb-speaker:v0.1.0"}, "image"},
		{"image with a bad digest", ManifestOptions{VIP: "192.0.2.250", Image: "ghcr.io/ironlb/ironlb-speaker@sha256:00"}, "image"},
		{"image with spaces", ManifestOptions{VIP: "192.0.2.250", Image: "ghcr.io/ironlb/ironlb speaker:v1"}, "image"},
		{"BGP options in l2", ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"192.0.2.1"}}, "mode"},
		{"BGP ASN in l2", ManifestOptions{VIP: "192.0.2.250", BGPASN: 64513}, "mode"},
		{"key file in BGP", bgp(ManifestOptions{VIP: "192.0.2.250", KeyFiles: []string{"/a.key"}}), "key-file"},
		{"BGP without peers", ManifestOptions{VIP: "192.0.2.250", Mode: "bgp", BGPPeerASN: 64512, BGPASN: 64513}, "bgp-peer"},
		{"BGP peer not an address", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"router"}}), "bgp-peer"},
		{"BGP peer with a zone", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"fe80::1%eth0"}}), "bgp-peer"},
		{"BGP peer multicast", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"224.0.0.5"}}), "bgp-peer"},
		{"BGP peer is the VIP", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"192.0.2.250"}}), "bgp-peer"},
		{"BGP peer twice", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: []string{"192.0.2.1", "192.0.2.1"}}), "bgp-peer"},
		{"too many BGP peers", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeers: strings.Split("192.0.2.1 192.0.2.2 192.0.2.3 192.0.2.4 192.0.2.5 192.0.2.6 192.0.2.7 192.0.2.8 192.0.2.9", " ")}), "bgp-peer"},
		{"no peer ASN", ManifestOptions{VIP: "192.0.2.250", Mode: "bgp", BGPPeers: []string{"192.0.2.1"}, BGPASN: 64513}, "bgp-peer-asn"},
		{"no ASN", ManifestOptions{VIP: "192.0.2.250", Mode: "bgp", BGPPeers: []string{"192.0.2.1"}, BGPPeerASN: 64512}, "bgp-asn"},
		{"AS_TRANS", bgp(ManifestOptions{VIP: "192.0.2.250", BGPASN: 23456}), "bgp-asn"},
		{"reserved ASN", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPeerASN: 4294967295}), "bgp-peer-asn"},
		{"password file relative", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPasswordFile: "pw"}), "bgp-password-file"},
		{"password file is the CA", bgp(ManifestOptions{VIP: "192.0.2.250", BGPPasswordFile: "/etc/kubernetes/pki/ca.crt"}), "bgp-password-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := StaticPod(tc.opts)
			var oe *OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("StaticPod(%+v) = %q, %v; want an OptionError", tc.opts, data, err)
			}
			if oe.Option != tc.wantOption {
				t.Errorf("rejected --%s (%v), want --%s", oe.Option, err, tc.wantOption)
			}
			if _, err := Args(tc.opts); !errors.As(err, &oe) {
				t.Errorf("Args accepts what StaticPod rejects: %v", err)
			}
		})
	}
}
