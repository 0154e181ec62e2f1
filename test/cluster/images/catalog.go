package images

import (
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
)

// The versions kubeadm v1.37.2 and the v1.37.2 e2e framework ask for
// (cmd/kubeadm/app/constants, test/utils/image/manifest.go).
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "3.7.0-0" // etcd v3.7.0, image revision 0
	CoreDNSVersion    = "v1.14.6"
	PauseVersion      = "3.10.2"
	AgnhostVersion    = "2.66.1"
	Registry          = "registry.k8s.io"
)

// Refs of the images, as kubeadm and the e2e framework name them.
var (
	PauseRef   = Registry + "/pause:" + PauseVersion
	AgnhostRef = Registry + "/e2e-test-images/agnhost:" + AgnhostVersion
	CoreDNSRef = Registry + "/coredns/coredns:" + CoreDNSVersion
	EtcdRef    = Registry + "/etcd:" + EtcdVersion
)

// KubeRef is the image of Kubernetes component name (kube-apiserver, ...).
func KubeRef(name string) string { return Registry + "/" + name + ":" + KubernetesVersion }

// path is what every image sets PATH to.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// base is what every image holds besides its programs: the users and
// groups of a distroless base (root, nobody, nonroot 65532), a /tmp, and
// glibc's name service switch for the Debian tools.
func base() []File {
	return []File{
		{Path: "/etc/passwd", Content: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Content: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		{Path: "/etc/nsswitch.conf", Content: []byte("hosts: files dns\n")},
		{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
}

// binary puts the static binary dir/name at /usr/local/bin/name.
func binary(dir, name string) File {
	return File{Path: "/usr/local/bin/" + name, Source: filepath.Join(dir, name), Mode: 0o755}
}

// Node returns the images every node of a kubeadm cluster needs: the pod
// sandbox, kube-proxy (with nft, iptables and conntrack, which it runs),
// CoreDNS and the e2e suite's agnhost. bin holds the static binaries
// (kube-proxy, coredns, agnhost, pause).
func Node(bin string) ([]Image, error) {
	proxyTools, err := HostFiles("/usr/sbin/nft", "/usr/sbin/iptables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore",
		"/usr/sbin/ip6tables", "/usr/sbin/ip6tables-save", "/usr/sbin/ip6tables-restore",
		"/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy", "/usr/sbin/conntrack")
	if err != nil {
		return nil, fmt.Errorf("kube-proxy's tools (apt-get install nftables iptables conntrack): %w", err)
	}
	xt, err := HostTree("/usr/lib/x86_64-linux-gnu/xtables")
	if err != nil {
		return nil, fmt.Errorf("iptables' extensions: %w", err)
	}
	agnhost, err := agnhostImage(bin)
	if err != nil {
		return nil, err
	}
	return []Image{
		{
			Ref:        PauseRef,
			Files:      append(base(), File{Path: "/pause", Source: filepath.Join(bin, "pause"), Mode: 0o755}),
			Entrypoint: []string{"/pause"},
			Env:        []string{pathEnv},
			User:       "65535:65535",
		},
		{
			Ref:   KubeRef("kube-proxy"),
			Files: concat(base(), []File{binary(bin, "kube-proxy")}, proxyTools, xt),
			Env:   []string{pathEnv},
		},
		{
			Ref:        CoreDNSRef,
			Files:      append(base(), File{Path: "/coredns", Source: filepath.Join(bin, "coredns"), Mode: 0o755}),
			Entrypoint: []string{"/coredns"},
			Env:        []string{pathEnv},
		},
		agnhost,
	}, nil
}

// agnhostImage is agnhost with what the e2e tests exec in its pods: a
// shell, nc (OpenBSD's, as in the upstream Alpine image), wget and curl,
// and busybox for the other basic commands. The shell is dash, not
// busybox's: Debian builds busybox's sh to prefer its own applets, so "nc"
// in a script would be busybox's nc, which lacks -v, -t and -u. wget is
// GNU wget: Debian's busybox-static (1.35.0) wget crashes (SIGSEGV) on
// every request. Its /etc/wgetrc makes it try once, as busybox's wget
// does: GNU wget tries 20 times by default, which turns each "not
// reachable" check of the e2e tests into four minutes.
func agnhostImage(bin string) (Image, error) {
	tools, err := HostFiles("/bin/sh", "/bin/busybox", "/bin/nc", "/usr/bin/wget", "/usr/bin/curl")
	if err != nil {
		return Image{}, fmt.Errorf("agnhost's tools (apt-get install busybox-static netcat-openbsd wget curl): %w", err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return Image{}, fmt.Errorf("busybox --list: %w", err)
	}
	files := concat(base(), tools, []File{
		{Path: "/agnhost", Source: filepath.Join(bin, "agnhost"), Mode: 0o755},
		{Path: "/agnhost-2", Link: "agnhost"},
		{Path: "/uploads", Dir: true, Mode: 0o755},
		{Path: "/etc/wgetrc", Content: []byte("tries = 1\n")},
	})
	have := map[string]bool{"busybox": true, "sh": true, "ash": true, "hush": true, "nc": true, "wget": true}
	for _, f := range files {
		have[filepath.Base(f.Path)] = true
	}
	for _, applet := range strings.Fields(string(out)) {
		if !have[applet] && !strings.ContainsAny(applet, "/[") {
			files = append(files, File{Path: "/usr/bin/" + applet, Link: "busybox"})
		}
	}
	return Image{
		Ref:        AgnhostRef,
		Files:      files,
		Entrypoint: []string{"/agnhost"},
		Cmd:        []string{"pause"},
		Env:        []string{pathEnv},
	}, nil
}

// ControlPlane returns the images of a kubeadm control-plane node's static
// pods: kube-apiserver, kube-controller-manager, kube-scheduler (run by
// name from PATH) and etcd.
func ControlPlane(bin string) []Image {
	var out []Image
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		out = append(out, Image{Ref: KubeRef(name), Files: append(base(), binary(bin, name)), Env: []string{pathEnv}})
	}
	return append(out, Image{Ref: EtcdRef, Files: append(base(), binary(bin, "etcd")), Env: []string{pathEnv}})
}

func concat(parts ...[]File) []File {
	var out []File
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
