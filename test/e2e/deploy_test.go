package e2e

// Tests of the install manifests: deploy/ (kustomize) and the Helm chart in
// deploy/chart/ironlb, against the rig's real kube-apiserver.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/provider"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
)

// chartValues is a values file with two pools and a cloud config. The
// speakers listen on a port other than 7473, which the chart must copy into
// the cloud config.
const chartValues = `
ccm:
  replicas: 3
  cloudConfig:
    instances:
      defaultZone: rack-a
      defaultRegion: dc1
    speakers:
      heartbeatInterval: 300ms
      heartbeatMisses: 4
speaker:
  port: 7480
  healthPort: 7481
  image:
    tag: v9.9.9
pools:
  - name: lan
    addresses: [192.0.2.0/28, "2001:db8::10-2001:db8::1f"]
  - name: dmz
    addresses: [198.51.100.0/29]
    autoAssign: false
    priority: 10
    layer2:
      nodeSelector:
        matchLabels:
          edge: "true"
`

// helmBinary returns the helm built by `make tools` ($(TOOLS_BIN)/helm),
// found like the control-plane binaries: in $IRONLB_TOOLS_BIN or
// <repo>/.cache/bin.
func helmBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("IRONLB_TOOLS_BIN")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), ".cache", "bin")
	}
	p := filepath.Join(dir, "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helm missing (run `make tools` first): %v", err)
	}
	return p
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy", "chart", "ironlb") }

// runHelm runs helm with its state folders in a temporary folder and no
// cluster access, and returns stdout.
func runHelm(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// helmTemplate renders the chart as release "ironlb" in namespace.
func helmTemplate(t *testing.T, ctx context.Context, namespace, values string, extra ...string) string {
	t.Helper()
	args := []string{"template", "ironlb", chartDir(t), "--namespace", namespace}
	if values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	out, err := runHelm(t, ctx, append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// parseObjects splits a multi-document manifest into objects.
func parseObjects(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := k8syaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs
		} else if err != nil {
			t.Fatalf("parsing manifest: %v\n%s", err, manifest)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// toYAML joins objects into one manifest.
func toYAML(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.String()
}

func objectKey(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s among the rendered objects", kind, name)
	return nil
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &v); err != nil {
		t.Fatalf("converting %s: %v", objectKey(o), err)
	}
	return &v
}

// applyCRDs creates the CustomResourceDefinitions among objs for real and
// waits until they are established, so that objects of their kinds can be
// validated.
func applyCRDs(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane, objs []*unstructured.Unstructured) {
	t.Helper()
	var crds []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		}
	}
	if len(crds) == 0 {
		t.Fatal("no CustomResourceDefinition in the manifest")
	}
	if out, err := cp.KubectlStdin(ctx, toYAML(t, crds), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range crds {
		if out, err := cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+c.GetName()); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}

// dryRun submits a manifest with server-side apply in dry-run mode: the API
// server runs defaulting, validation (including CEL rules of CRDs) and
// admission, and stores nothing.
func dryRun(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane, manifest string) {
	t.Helper()
	out, err := cp.KubectlStdin(ctx, manifest, "apply", "--server-side", "--dry-run=server", "-f", "-")
	if err != nil {
		t.Fatalf("the API server refused the manifest: %v", err)
	}
	t.Logf("dry-run accepted:\n%s", out)
}

func kustomize(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane) string {
	t.Helper()
	out, err := cp.Kubectl(ctx, "kustomize", filepath.Join(repoRoot(t), "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSpeaker checks the security-relevant parts of the speaker DaemonSet
// and its ServiceAccount.
func checkSpeaker(t *testing.T, objs []*unstructured.Unstructured, port, healthPort int32) {
	t.Helper()
	sa := convert[corev1.ServiceAccount](t, find(t, objs, "ServiceAccount", "ironlb-speaker"))
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount ironlb-speaker: automountServiceAccountToken = %v, want false", sa.AutomountServiceAccountToken)
	}
	// Nothing grants the speakers any Kubernetes permission.
	for _, o := range objs {
		if k := o.GetKind(); k == "RoleBinding" || k == "ClusterRoleBinding" {
			if strings.Contains(fmt.Sprint(o.Object["subjects"]), "ironlb-speaker") {
				t.Errorf("%s binds the speaker's ServiceAccount", objectKey(o))
			}
		}
	}

	ds := convert[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "ironlb-speaker"))
	spec := ds.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("speaker pods: automountServiceAccountToken = %v, want false", spec.AutomountServiceAccountToken)
	}
	if spec.ServiceAccountName != "ironlb-speaker" {
		t.Errorf("speaker pods: serviceAccountName = %q", spec.ServiceAccountName)
	}
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("speaker pods: hostNetwork %v, dnsPolicy %q; want true, ClusterFirstWithHostNet", spec.HostNetwork, spec.DNSPolicy)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == ""
	}) {
		t.Errorf("speaker pods do not tolerate every taint: %+v", spec.Tolerations)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ds.Spec.UpdateStrategy.RollingUpdate == nil ||
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("speaker updateStrategy = %+v, want RollingUpdate with maxUnavailable 1", ds.Spec.UpdateStrategy)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("speaker pods have %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("speaker container has no capabilities in its securityContext")
	}
	added := slices.Clone(sc.Capabilities.Add)
	slices.Sort(added)
	if want := []corev1.Capability{"NET_RAW"}; !slices.Equal(added, want) {
		t.Errorf("speaker capabilities added = %v, want %v", added, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("speaker capabilities dropped = %v, want [ALL]", sc.Capabilities.Drop)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("speaker container is privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("speaker container: allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("speaker container: readOnlyRootFilesystem is not true")
	}
	if p := spec.SecurityContext; p == nil || p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("speaker pods: seccomp profile is not RuntimeDefault")
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if diff := cmp.Diff(map[string]string{"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP"}, env); diff != "" {
		t.Errorf("speaker env (-want +got):\n%s", diff)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{"grpc": port, "health": healthPort}, ports); diff != "" {
		t.Errorf("speaker ports (-want +got):\n%s", diff)
	}
	for _, want := range []string{fmt.Sprintf("--port=%d", port), fmt.Sprintf("--health-port=%d", healthPort)} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("speaker args %v lack %s", c.Args, want)
		}
	}
	// The speaker listens on the node IP ($NODE_IP), not every address.
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--listen=") || strings.HasPrefix(a, "--health-address=") {
			t.Errorf("speaker arg %s overrides listening on the node IP", a)
		}
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "health" {
		t.Errorf("speaker liveness probe = %+v, want GET /healthz on health", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.String() != "health" {
		t.Errorf("speaker readiness probe = %+v, want GET /readyz on health", c.ReadinessProbe)
	}
	// The CA bundle is mounted whole (no subPath: the kubelet would never
	// update it) and read-only; the token is projected for IronLB's
	// audience only, and no API token is mounted.
	mountedBy := func(path string, ok func(v corev1.Volume) bool) bool {
		return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.MountPath == path && m.ReadOnly && m.SubPath == "" && slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name && ok(v) })
		})
	}
	if !mountedBy("/etc/ironlb/ca", func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == "ironlb-ca-bundle" && len(v.ConfigMap.Items) == 0
	}) {
		t.Errorf("speaker does not mount ConfigMap ironlb-ca-bundle read-only at /etc/ironlb/ca: mounts %+v, volumes %+v", c.VolumeMounts, spec.Volumes)
	}
	if !mountedBy("/var/run/secrets/ironlb.dev", func(v corev1.Volume) bool {
		return v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil &&
			v.Projected.Sources[0].ServiceAccountToken.Audience == "ironlb.dev/speaker" && v.Projected.Sources[0].ServiceAccountToken.Path == "token"
	}) {
		t.Errorf("speaker does not mount a token for the audience ironlb.dev/speaker at /var/run/secrets/ironlb.dev/token: mounts %+v, volumes %+v", c.VolumeMounts, spec.Volumes)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("speaker pods mount an API token (automountServiceAccountToken %v)", spec.AutomountServiceAccountToken)
	}
}

// checkCCMNamespace checks that the CCM learns its namespace, where it
// creates the speakers' Secret.
func checkCCMNamespace(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	d := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "ironlb-ccm"))
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}) {
		t.Errorf("ironlb-ccm has no POD_NAMESPACE from metadata.namespace: %+v", c.Env)
	}
	return d
}

// normalize strips what legitimately differs between the chart and deploy/:
// labels (the chart adds Helm's), pod template annotations, and
// imagePullPolicy (set by the chart, defaulted by the API server otherwise).
func normalize(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "labels")
	unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata", "labels")
	unstructured.RemoveNestedField(c.Object, "spec", "template", "metadata", "annotations")
	if cs, ok, _ := unstructured.NestedSlice(c.Object, "spec", "template", "spec", "containers"); ok {
		for _, ct := range cs {
			delete(ct.(map[string]any), "imagePullPolicy")
		}
		_ = unstructured.SetNestedSlice(c.Object, cs, "spec", "template", "spec", "containers")
	}
	return c.Object
}

// TestChartCRDMatchesDeploy: the chart ships the CRD that `make generate`
// writes to deploy/crds, through a symlink in deploy/chart/ironlb/crds/
// (helm reads the linked file); a new CRD needs a new link.
func TestChartCRDMatchesDeploy(t *testing.T) {
	root := repoRoot(t)
	src, err := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	if err != nil || len(src) == 0 {
		t.Fatalf("no CRDs in deploy/crds: %v", err)
	}
	for _, f := range src {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, "deploy", "chart", "ironlb", "crds", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/chart/ironlb/crds/%s differs from deploy/crds: link it: ln -s ../../../crds/%[1]s deploy/chart/ironlb/crds/%[1]s", filepath.Base(f))
		}
	}
}

// TestKustomizeDeployDryRun: the API server accepts deploy/ as rendered by
// kubectl kustomize.
func TestKustomizeDeployDryRun(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	manifest := kustomize(t, ctx, cp)
	objs := parseObjects(t, manifest)
	checkSpeaker(t, objs, 7473, 7474)
	checkCCMNamespace(t, objs)
	applyCRDs(t, ctx, cp, objs)
	// A server-side dry run creates no namespace: create deploy/'s for
	// real, as it creates the CRDs, so the objects in it can be checked.
	var nss []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			nss = append(nss, o)
		}
	}
	if len(nss) != 1 || nss[0].GetName() != "ironlb-system" {
		t.Fatalf("deploy/ holds namespaces %v, want ironlb-system", nss)
	}
	if out, err := cp.KubectlStdin(ctx, toYAML(t, nss), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("creating the namespace: %v\n%s", err, out)
	}
	dryRun(t, ctx, cp, manifest)
}

// TestChartLintTemplateDryRun: helm lint --strict passes, and the API server
// accepts the chart rendered with the default values and with pools and a
// cloud config; the chart renders the same objects as deploy/.
func TestChartLintTemplateDryRun(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(chartValues), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{nil, {"--values", valuesFile}} {
		if out, err := runHelm(t, ctx, append([]string{"lint", "--strict", chartDir(t)}, extra...)...); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("helm lint %v:\n%s", extra, out)
		}
	}

	// A cloud config whose speakers.port contradicts speaker.port is refused.
	if _, err := runHelm(t, ctx, "template", "ironlb", chartDir(t), "--set", "speaker.port=7480",
		"--set", "ccm.cloudConfig.speakers.port=7473"); err == nil || !strings.Contains(err.Error(), "differs from speaker.port") {
		t.Errorf("helm template with contradicting ports: err = %v, want a failure naming speaker.port", err)
	}

	cp := controlplane.ForTest(t)
	kustomized := parseObjects(t, kustomize(t, ctx, cp))
	applyCRDs(t, ctx, cp, kustomized)
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ironlb-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("defaults", func(t *testing.T) {
		// helm install -n ironlb-system --create-namespace: the chart
		// does not hold the Namespace, deploy/ does.
		manifest := helmTemplate(t, ctx, "ironlb-system", "")
		objs := parseObjects(t, manifest)
		checkSpeaker(t, objs, 7473, 7474)
		d := checkCCMNamespace(t, objs)
		if *d.Spec.Replicas != 2 {
			t.Errorf("ccm replicas = %d, want 2", *d.Spec.Replicas)
		}
		// Same objects as deploy/, but for labels (the CRD is compared
		// byte for byte by TestChartCRDMatchesDeploy).
		want := map[string]map[string]any{}
		for _, o := range kustomized {
			if k := o.GetKind(); k != "CustomResourceDefinition" && k != "Namespace" {
				want[objectKey(o)] = normalize(o)
			}
		}
		got := map[string]map[string]any{}
		for _, o := range objs {
			got[objectKey(o)] = normalize(o)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("chart (default values) vs kubectl kustomize deploy/ (-kustomize +chart):\n%s", diff)
		}
		dryRun(t, ctx, cp, manifest)
	})

	t.Run("pools and cloud config", func(t *testing.T) {
		const ns = "lb-elsewhere"
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		manifest := helmTemplate(t, ctx, ns, chartValues)
		objs := parseObjects(t, manifest)
		checkSpeaker(t, objs, 7480, 7481)
		d := checkCCMNamespace(t, objs)
		if *d.Spec.Replicas != 3 {
			t.Errorf("ccm replicas = %d, want 3", *d.Spec.Replicas)
		}
		ds := convert[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "ironlb-speaker"))
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/ironlb/ironlb-speaker:v9.9.9" {
			t.Errorf("speaker image = %s", img)
		}

		// Namespaced objects follow the release namespace, except the
		// binding to the built-in role in kube-system and the reader of
		// kube-system/kubeadm-config (the control-plane VIP).
		for _, o := range objs {
			switch o.GetKind() {
			case "ClusterRole", "ClusterRoleBinding", "IPPool":
				if o.GetNamespace() != "" {
					t.Errorf("%s is namespaced", objectKey(o))
				}
			default:
				want := ns
				if o.GetName() == "ironlb-ccm-authentication-reader" || o.GetName() == "ironlb-ccm-kubeadm-config-reader" {
					want = "kube-system"
				}
				if o.GetNamespace() != want {
					t.Errorf("%s: namespace %q, want %q", objectKey(o), o.GetNamespace(), want)
				}
			}
			if o.GetKind() == "RoleBinding" || o.GetKind() == "ClusterRoleBinding" {
				rb := convert[struct {
					Subjects []struct{ Kind, Name, Namespace string }
				}](t, o)
				for _, s := range rb.Subjects {
					if s.Namespace != ns {
						t.Errorf("%s: subject %s/%s, want namespace %s", objectKey(o), s.Namespace, s.Name, ns)
					}
				}
			}
		}

		// The cloud config is valid for the CCM and tells it the speakers'
		// port; the CCM reads it from the mounted ConfigMap.
		cm := convert[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "ironlb-ccm-config"))
		cfg, err := provider.ParseConfig(strings.NewReader(cm.Data["cloud-config.yaml"]))
		if err != nil {
			t.Fatalf("rendered cloud config: %v\n%s", err, cm.Data["cloud-config.yaml"])
		}
		if cfg.Speakers.Port != 7480 || cfg.Speakers.HeartbeatInterval.Duration != 300*time.Millisecond ||
			cfg.Speakers.HeartbeatMisses != 4 || cfg.Instances.DefaultZone != "rack-a" {
			t.Errorf("rendered cloud config = %+v", cfg)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "--cloud-config=/etc/ironlb/cloud-config.yaml") ||
			!slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/etc/ironlb" }) ||
			!slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
				return v.ConfigMap != nil && v.ConfigMap.Name == "ironlb-ccm-config"
			}) {
			t.Errorf("ironlb-ccm does not get the cloud config: args %v, mounts %+v", c.Args, c.VolumeMounts)
		}
		if !slices.Contains(c.Args, "--leader-elect-resource-namespace=$(POD_NAMESPACE)") {
			t.Errorf("ironlb-ccm args %v: leader election Lease not in its namespace", c.Args)
		}

		var pools []string
		for _, o := range objs {
			if o.GetKind() == "IPPool" {
				pools = append(pools, o.GetName())
			}
		}
		sort.Strings(pools)
		if !slices.Equal(pools, []string{"dmz", "lan"}) {
			t.Errorf("rendered IPPools %v, want [dmz lan]", pools)
		}
		dmz := convert[v1alpha1.IPPool](t, find(t, objs, "IPPool", "dmz"))
		if dmz.Spec.AutoAssign == nil || *dmz.Spec.AutoAssign || dmz.Spec.Priority != 10 ||
			dmz.Spec.Layer2 == nil || dmz.Spec.Layer2.NodeSelector.MatchLabels["edge"] != "true" {
			t.Errorf("IPPool dmz spec = %+v", dmz.Spec)
		}
		dryRun(t, ctx, cp, manifest)
	})
}

// TestChartInstallCCM installs the rendered chart into ironlb-system (all but
// the Deployment and the DaemonSet: the rig has no kubelets) and runs the
// real CCM with a token of the chart's ServiceAccount: the chart's RBAC must
// let it initialize nodes, assign addresses from the chart's pool, and
// create the speakers' certificate Secrets.
func TestChartInstallCCM(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "ironlb-system" // rig.StartCCM sets no POD_NAMESPACE: the CCM uses ironlb-system
	manifest := helmTemplate(t, ctx, ns, "pools:\n  - name: chart-pool\n    addresses: [203.0.113.8/29]\n", "--include-crds")
	objs := parseObjects(t, manifest)
	cp := controlplane.ForTest(t)
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyCRDs(t, ctx, cp, objs)
	var install []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "CustomResourceDefinition", "Deployment", "DaemonSet":
		default:
			install = append(install, o)
		}
	}
	if out, err := cp.KubectlStdin(ctx, toYAML(t, install), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("installing the chart: %v\n%s", err, out)
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, ns, "ironlb-ccm")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ctx: ctx, cp: cp, kubeconfig: kubeconfig,
		pools: dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)}
	c.ccm = rig.StartCCMForTest(t, rig.CCMOptions{Kubeconfig: kubeconfig, LeaderElect: true})

	// Node initialization.
	if _, err := rig.RegisterNode(ctx, cp.Client, "chart-node", "192.0.2.21", nil); err != nil {
		t.Fatal(err)
	}
	err = rig.Eventually(30*time.Second, func() error {
		node, err := cp.Client.CoreV1().Nodes().Get(ctx, "chart-node", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !rig.Initialized(node) {
			return fmt.Errorf("node chart-node still tainted: %v", node.Spec.Taints)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// An address from the pool the chart created.
	c.createService(lbService("default", "chart-web", nil))
	ip := c.waitIngress("default", "chart-web", 1, 30*time.Second)[0]
	if !inPrefix(t, ip, "203.0.113.8/29") {
		t.Errorf("chart-web got %s, outside the chart's pool", ip)
	}

	// The CA (immutable) and the bundle the DaemonSet mounts.
	err = rig.Eventually(30*time.Second, func() error {
		s, err := cp.Client.CoreV1().Secrets(ns).Get(ctx, "ironlb-ca", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Data["ca.crt"]) == 0 || len(s.Data["ca.key"]) == 0 || s.Immutable == nil || !*s.Immutable {
			return fmt.Errorf("Secret %s/ironlb-ca: keys %d/%d bytes, immutable %v", ns, len(s.Data["ca.crt"]), len(s.Data["ca.key"]), s.Immutable)
		}
		cm, err := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, "ironlb-ca-bundle", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data["ca.crt"] != string(s.Data["ca.crt"]) {
			return fmt.Errorf("ConfigMap %s/ironlb-ca-bundle does not hold the CA", ns)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ds := convert[appsv1.DaemonSet](t, find(t, objs, "DaemonSet", "ironlb-speaker"))
	if ds.Namespace != ns {
		t.Errorf("speaker DaemonSet in %s, the CA bundle in %s", ds.Namespace, ns)
	}
	if _, err := cp.Client.CoordinationV1().Leases(ns).Get(ctx, "ironlb-ccm", metav1.GetOptions{}); err != nil {
		t.Errorf("leader election Lease: %v", err)
	}
	if c.ccm.LogContains("forbidden") {
		t.Errorf("the CCM was refused something with the chart's RBAC:\n%s", c.ccm.Tail(40))
	}
}
