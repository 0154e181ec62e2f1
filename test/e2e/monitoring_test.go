package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/monitoring"
	"github.com/ironlb/ironlb/test/rig"
)

// scrape is one /metrics page, parsed.
type scrape map[string]*dto.MetricFamily

func parseScrape(text string) (scrape, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// names adds the sample names of s to into: a histogram's _bucket, _sum and
// _count, a summary's quantiles, _sum and _count.
func (s scrape) names(into map[string]bool) {
	for name, f := range s {
		if len(f.GetMetric()) == 0 {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			into[name+"_bucket"], into[name+"_sum"], into[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			into[name], into[name+"_sum"], into[name+"_count"] = true, true, true
		default:
			into[name] = true
		}
	}
}

// value is the value of the sample of family name whose labels include
// labels, and whether there is one.
func (s scrape) value(name string, labels map[string]string) (float64, bool) {
	f, ok := s[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMonitoringMetricsScraped: every metric the alerts and the dashboard
// (deploy/monitoring) read is exported by the real binaries. The BGP rig
// runs two CCM replicas as shipped (leader election on the Lease
// ironlb-ccm), three speakers and FRR with BFD; the test makes each
// metric appear (a labelled counter shows only once counted): Services in
// a layer-2 and a BGP pool and one asking for a missing pool (an allocation
// failure), the link of the layer-2 VIP's node down (a speaker loss, a
// failover, a BFD flap), a BGP session cleared on the router (a BGP flap).
// Then it scrapes both CCMs and every speaker and checks each metric name
// of every expression against the scrape. It also checks what
// IronLBCCMNotLeading relies on: leader_election_master_status with
// name="ironlb-ccm" is 1 on exactly one replica and 0 on the other.
func TestMonitoringMetricsScraped(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{Replicas: 2, LogDir: os.Getenv("IRONLB_BGP_LOGDIR")}, "")
	ports := []int{rig.CCMSecurePort, rig.CCMSecurePort + 1}

	// leader returns the leading replica's scrape and both.
	leader := func() (scrape, []scrape, error) {
		var lead scrape
		var all []scrape
		for _, port := range ports {
			text, err := b.CCMGetFrom(ctx, port, "/metrics")
			if err != nil {
				return nil, nil, err
			}
			s, err := parseScrape(text)
			if err != nil {
				return nil, nil, fmt.Errorf("CCM on port %d: %w", port, err)
			}
			all = append(all, s)
			if v, ok := s.value("leader_election_master_status", map[string]string{"name": "ironlb-ccm"}); ok && v == 1 {
				if lead != nil {
					return nil, nil, fmt.Errorf("two CCMs report leading the Lease ironlb-ccm")
				}
				lead = s
			} else if !ok {
				return nil, nil, fmt.Errorf("CCM on port %d exports no leader_election_master_status{name=\"ironlb-ccm\"}", port)
			}
		}
		if lead == nil {
			return nil, nil, fmt.Errorf("no CCM reports leading the Lease ironlb-ccm (leader_election_master_status 1)")
		}
		return lead, all, nil
	}
	// waitLeader waits until cond holds on the leader's scrape.
	waitLeader := func(what string, timeout time.Duration, cond func(scrape) error) {
		t.Helper()
		if err := rig.Eventually(timeout, func() error {
			s, _, err := leader()
			if err != nil {
				return err
			}
			return cond(s)
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	atLeast := func(name string, labels map[string]string, min float64) func(scrape) error {
		return func(s scrape) error {
			if v, ok := s.value(name, labels); !ok || v < min {
				return fmt.Errorf("%s%v = %v (present %v), want at least %v", name, labels, v, ok, min)
			}
			return nil
		}
	}

	c.applyPeer("tor", torSpec("\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"))
	if err := b.RouterBFD(ctx, 100, 100); err != nil {
		t.Fatal(err)
	}
	c.applyPool("bgp", bgpPool)
	c.applyPool("lan", l2Pool)
	c.createService(lbService("default", "web-bgp", map[string]string{"ironlb.dev/pool": "bgp"}))
	c.createService(lbService("default", "web-l2", map[string]string{"ironlb.dev/pool": "lan"}))
	c.createService(lbService("default", "nowhere", map[string]string{"ironlb.dev/pool": "no-such-pool"}))
	l2VIP := c.vip("default", "web-l2")
	c.vip("default", "web-bgp")
	for _, n := range b.Nodes {
		waitLeader("BFD up", 60*time.Second, func(s scrape) error {
			if v, ok := s.value("ironlb_bfd_session_up", map[string]string{"node": n.Name}); !ok || v != 1 {
				return fmt.Errorf("ironlb_bfd_session_up{node=%q} = %v (present %v)", n.Name, v, ok)
			}
			return nil
		})
	}
	waitLeader("allocation failure", 30*time.Second, atLeast("ironlb_allocation_failures_total", nil, 1))

	// The layer-2 VIP's node loses its link: the CCM loses its speaker
	// and moves the VIP; BFD goes down, which its speaker reports once
	// it is back.
	holder := b.Node(checkAnnouncer(t, ctx, b.L2, l2VIP))
	if err := holder.Host.SetLink(false); err != nil {
		t.Fatal(err)
	}
	waitLeader("speaker lost", 30*time.Second, atLeast("ironlb_speaker_loss_detection_seconds", nil, 1))
	waitLeader("failover", 30*time.Second, atLeast("ironlb_failovers_total", nil, 1))
	time.Sleep(time.Second)
	if err := holder.Host.SetLink(true); err != nil {
		t.Fatal(err)
	}
	waitLeader("BFD flap", 60*time.Second, atLeast("ironlb_bfd_session_flaps_total", map[string]string{"node": holder.Name}, 1))

	// A BGP session of another node is reset by the router.
	other := b.Nodes[0]
	if other == holder {
		other = b.Nodes[1]
	}
	waitLeader("BGP up", 60*time.Second, atLeast("ironlb_bgp_session_up", map[string]string{"node": other.Name}, 1))
	if out, err := b.Router.Vtysh(ctx, "clear bgp "+other.IPv4.String()); err != nil {
		t.Fatalf("clear bgp: %v\n%s", err, out)
	}
	waitLeader("BGP flap", 60*time.Second, atLeast("ironlb_bgp_session_flaps_total", map[string]string{"node": other.Name}, 1))

	// Scrape every CCM and speaker.
	have := map[string]bool{}
	lead, ccms, err := leader()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ironlb_failovers_total", "ironlb_speaker_loss_detection_seconds", "ironlb_bfd_session_flaps_total", "ironlb_bgp_session_flaps_total", "ironlb_allocation_failures_total"} {
		for _, m := range lead[name].GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				v = h.GetSampleSum() / float64(h.GetSampleCount())
				ls = append(ls, fmt.Sprintf("count=%d mean", h.GetSampleCount()))
			}
			t.Logf("leader: %s{%s} %v", name, strings.Join(ls, ","), v)
		}
	}
	for _, s := range ccms {
		s.names(have)
	}
	for _, n := range b.Nodes {
		text, err := b.SpeakerMetrics(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		s, err := parseScrape(text)
		if err != nil {
			t.Fatalf("speaker %s: %v", n.Name, err)
		}
		s.names(have)
	}
	qs, err := monitoring.Queries()
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{}
	for _, q := range qs {
		names, err := monitoring.MetricNames(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Source, err)
			continue
		}
		for _, n := range names {
			checked[n] = true
			if !have[n] {
				t.Errorf("%s reads %s, which neither CCM nor any speaker exports", q.Source, n)
			}
		}
	}
	list := make([]string, 0, len(checked))
	for n := range checked {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("%d expressions read %d metrics, all found in the scrapes of 2 CCMs and %d speakers: %s",
		len(qs), len(list), len(b.Nodes), strings.Join(list, " "))
}

// monitoringSpec is the spec of deploy/monitoring's PrometheusRule.
func monitoringSpec(t *testing.T) map[string]any {
	t.Helper()
	var pr struct {
		Spec map[string]any `json:"spec"`
	}
	rule, err := monitoring.RuleFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(rule, &pr); err != nil {
		t.Fatal(err)
	}
	return pr.Spec
}

// checkDashboardConfigMap checks that cm holds the dashboard of
// deploy/monitoring and carries Grafana's sidecar label.
func checkDashboardConfigMap(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap %s labels %v: no grafana_dashboard: \"1\"", cm.Name, cm.Labels)
	}
	var got, want any
	if err := json.Unmarshal([]byte(cm.Data["ironlb-dashboard.json"]), &got); err != nil {
		t.Fatalf("ConfigMap %s: ironlb-dashboard.json: %v", cm.Name, err)
	}
	dashboard, err := monitoring.DashboardFile()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dashboard, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ConfigMap %s's dashboard differs from deploy/monitoring/ironlb-dashboard.json:\n%s", cm.Name, diff)
	}
}

// TestChartMonitoring: monitoring.enabled renders deploy/monitoring's
// PrometheusRule (its spec unchanged, the labels a ruleSelector needs) and
// dashboard ConfigMap (labelled for Grafana's sidecar, in the namespace
// asked for); off by default.
func TestChartMonitoring(t *testing.T) {
	if testing.Short() {
		t.Skip("renders deploy/monitoring and the chart with kubectl and helm (make controlplane tools)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := runHelm(t, ctx, "lint", "--strict", chartDir(t), "--set", "monitoring.enabled=true"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("helm lint --set monitoring.enabled=true:\n%s", out)
	}
	for _, o := range parseObjects(t, helmTemplate(t, ctx, "ironlb-system", "")) {
		if o.GetKind() == "PrometheusRule" || o.GetName() == "ironlb-dashboard" {
			t.Errorf("default values render %s", objectKey(o))
		}
	}
	objs := parseObjects(t, helmTemplate(t, ctx, "ironlb-system", `
monitoring:
  enabled: true
  prometheusRule:
    labels: {release: kube-prometheus-stack}
  dashboard:
    namespace: grafana
    annotations: {grafana_folder: IronLB}
`))
	pr := find(t, objs, "PrometheusRule", "ironlb")
	if pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetNamespace() != "ironlb-system" || pr.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule %s %s/%s labels %v", pr.GetAPIVersion(), pr.GetNamespace(), pr.GetName(), pr.GetLabels())
	}
	if diff := cmp.Diff(monitoringSpec(t), pr.Object["spec"]); diff != "" {
		t.Errorf("the chart's PrometheusRule spec differs from deploy/monitoring's:\n%s", diff)
	}
	cm := convert[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "ironlb-dashboard"))
	if cm.Namespace != "grafana" || cm.Annotations["grafana_folder"] != "IronLB" {
		t.Errorf("dashboard ConfigMap in %q with annotations %v", cm.Namespace, cm.Annotations)
	}
	checkDashboardConfigMap(t, cm)
}

// TestKustomizeMonitoring: kubectl kustomize deploy/monitoring renders the
// PrometheusRule, the dashboard ConfigMap and PodMonitors that select
// deploy/'s CCM and speaker pods on ports they have, the CCM's with a
// token allowed to GET /metrics; deploy/ itself does not include it (it
// needs the Prometheus Operator's CRDs).
func TestKustomizeMonitoring(t *testing.T) {
	if testing.Short() {
		t.Skip("renders deploy/monitoring and the chart with kubectl and helm (make controlplane tools)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kubectl := filepath.Join(filepath.Dir(helmBinary(t)), "kubectl")
	render := func(dir string) []*unstructured.Unstructured {
		out, err := exec.CommandContext(ctx, kubectl, "kustomize", filepath.Join(repoRoot(t), dir)).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		return parseObjects(t, string(out))
	}
	objs := render("deploy/monitoring")
	base := render("deploy")
	for _, o := range base {
		if o.GetAPIVersion() == "monitoring.coreos.com/v1" || o.GetName() == "ironlb-dashboard" {
			t.Errorf("deploy/ renders %s: it must apply without the Prometheus Operator", objectKey(o))
		}
	}
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "ironlb-system" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" {
			t.Errorf("%s in namespace %q", objectKey(o), ns)
		}
	}
	pr := find(t, objs, "PrometheusRule", "ironlb")
	if diff := cmp.Diff(monitoringSpec(t), pr.Object["spec"]); diff != "" {
		t.Errorf("rendered PrometheusRule spec differs from the file's:\n%s", diff)
	}
	checkDashboardConfigMap(t, convert[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "ironlb-dashboard")))

	type podMonitor struct {
		Spec struct {
			Selector            metav1.LabelSelector `json:"selector"`
			PodMetricsEndpoints []struct {
				Port          string `json:"port"`
				Path          string `json:"path"`
				Scheme        string `json:"scheme"`
				Authorization *struct {
					Type        string `json:"type"`
					Credentials struct {
						Name string `json:"name"`
						Key  string `json:"key"`
					} `json:"credentials"`
				} `json:"authorization"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	templates := map[string]corev1.PodTemplateSpec{
		"ironlb-ccm":     convert[appsv1.Deployment](t, find(t, base, "Deployment", "ironlb-ccm")).Spec.Template,
		"ironlb-speaker": convert[appsv1.DaemonSet](t, find(t, base, "DaemonSet", "ironlb-speaker")).Spec.Template,
	}
	for name, tpl := range templates {
		pm := convert[podMonitor](t, find(t, objs, "PodMonitor", name))
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(tpl.Labels)) {
			t.Errorf("PodMonitor %s selects %v, not the pods of deploy/ (%v): %v", name, pm.Spec.Selector, tpl.Labels, err)
		}
		if len(pm.Spec.PodMetricsEndpoints) != 1 {
			t.Fatalf("PodMonitor %s: %d endpoints", name, len(pm.Spec.PodMetricsEndpoints))
		}
		ep := pm.Spec.PodMetricsEndpoints[0]
		if !slices.ContainsFunc(tpl.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == ep.Port }) || ep.Path != "/metrics" {
			t.Errorf("PodMonitor %s scrapes port %q path %q: not a port of the pod", name, ep.Port, ep.Path)
		}
		if name == "ironlb-ccm" {
			if ep.Scheme != "https" || ep.Authorization == nil {
				t.Fatalf("PodMonitor ironlb-ccm: scheme %q authorization %+v, want https with a token", ep.Scheme, ep.Authorization)
			}
			sec := convert[corev1.Secret](t, find(t, objs, "Secret", ep.Authorization.Credentials.Name))
			if sec.Type != corev1.SecretTypeServiceAccountToken || ep.Authorization.Credentials.Key != corev1.ServiceAccountTokenKey {
				t.Errorf("the CCM's PodMonitor uses key %q of Secret %s of type %s", ep.Authorization.Credentials.Key, sec.Name, sec.Type)
			}
			sa := sec.Annotations[corev1.ServiceAccountNameKey]
			find(t, objs, "ServiceAccount", sa)
			crb := convert[rbacv1.ClusterRoleBinding](t, find(t, objs, "ClusterRoleBinding", "ironlb-metrics-reader"))
			if len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa || crb.Subjects[0].Namespace != "ironlb-system" {
				t.Errorf("ClusterRoleBinding subjects %+v, want the ServiceAccount %s", crb.Subjects, sa)
			}
			cr := convert[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", crb.RoleRef.Name))
			if len(cr.Rules) != 1 || !slices.Equal(cr.Rules[0].NonResourceURLs, []string{"/metrics"}) || !slices.Equal(cr.Rules[0].Verbs, []string{"get"}) {
				t.Errorf("ClusterRole %s rules %+v, want get /metrics only", cr.Name, cr.Rules)
			}
		}
	}
}

// TestMonitoringDryRun: the API server, with the Prometheus Operator's CRDs
// for PrometheusRule and PodMonitor (from its module on the Go module
// proxy, operatorModule),
// accepts deploy/monitoring as kubectl kustomize renders it and the
// chart's monitoring objects: their schemas, the ConfigMap's size, the
// token Secret, the RBAC.
func TestMonitoringDryRun(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	dir, err := binaries.ModuleDir(ctx, operatorModule)
	if err != nil {
		t.Fatal(err)
	}
	crds := []string{
		filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_podmonitors.yaml"),
		filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_prometheusrules.yaml"),
	}
	var objs []*unstructured.Unstructured
	for _, f := range crds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, parseObjects(t, string(b))...)
	}
	applyCRDs(t, ctx, cp, objs)
	for _, ns := range []string{"ironlb-system", "grafana"} {
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := cp.Kubectl(ctx, "kustomize", filepath.Join(repoRoot(t), "deploy", "monitoring"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	dryRun(t, ctx, cp, out)
	var chart []*unstructured.Unstructured
	for _, o := range parseObjects(t, helmTemplate(t, ctx, "ironlb-system", "monitoring: {enabled: true, dashboard: {namespace: grafana}}")) {
		if o.GetKind() == "PrometheusRule" || o.GetName() == "ironlb-dashboard" {
			chart = append(chart, o)
		}
	}
	if len(chart) != 2 {
		t.Fatalf("the chart renders %d monitoring objects, want 2", len(chart))
	}
	dryRun(t, ctx, cp, toYAML(t, chart))
}

// operatorModule holds the Prometheus Operator's CRDs the monitoring
// objects are checked against; read from the module cache, not copied.
const operatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
