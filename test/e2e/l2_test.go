package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// l2Pool covers the part of the LAN the nodes route locally.
const l2Pool = "addresses: [192.0.2.200-192.0.2.219, '2001:db8:100::200-2001:db8:100::21f']"

// newL2 starts the layer-2 rig: control plane with deploy/ applied, LAN,
// client, three nodes with real speakers, and the CCM running with its
// ServiceAccount's token in its own namespace.
func newL2(t *testing.T, ctx context.Context, opts rig.L2Options) (*cluster, *rig.L2) {
	t.Helper()
	c, lan := newRigCluster(t, ctx)
	opts.Kubeconfig = c.kubeconfig
	r, err := rig.StartL2(ctx, c.cp, lan, opts)
	t.Cleanup(func() {
		if t.Failed() && r != nil {
			t.Logf("process logs:\n%s", r.Logs(40))
		}
		if r != nil {
			r.Stop()
		}
	})
	if err != nil {
		t.Fatalf("starting the layer-2 rig: %v", err)
	}
	c.ccm = r.CCM
	return c, r
}

// newRigCluster is what every rig test starts from: a control plane with
// deploy/ applied (the CCM runs with its ServiceAccount's token) and a LAN.
// It skips the test where network namespaces are unusable.
func newRigCluster(t *testing.T, ctx context.Context) (*cluster, *netrig.LAN) {
	t.Helper()
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	cp := controlplane.ForTest(t)
	c := &cluster{t: t, ctx: ctx, cp: cp, kubeconfig: installDeploy(t, ctx, cp)}
	c.pools = dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)
	return c, netrig.NewLAN(t)
}

func (c *cluster) vip(namespace, name string) netip.Addr {
	c.t.Helper()
	return netip.MustParseAddr(c.waitIngress(namespace, name, 1, 30*time.Second)[0])
}

// checkAnnouncer reaches vip from the client and checks that the node that
// answered is the one whose MAC the client resolved the VIP to.
func checkAnnouncer(t *testing.T, ctx context.Context, r *rig.L2, vip netip.Addr) string {
	t.Helper()
	node, err := r.WaitReachable(ctx, vip, 15*time.Second)
	if err != nil {
		t.Fatalf("client cannot reach %s: %v", vip, err)
	}
	ann, err := r.Announcer(vip)
	if err != nil {
		t.Fatal(err)
	}
	if ann.Name != node {
		t.Errorf("client resolved %s to %s's MAC but %s answered", vip, ann.Name, node)
	}
	return node
}

// TestLayer2 is the MetalLB layer-2 walkthrough on the rig: three Services
// reachable from the client through the announcing node, spread over the
// nodes, withdrawn on delete; an IPv6 VIP over NDP; externalTrafficPolicy
// Local following the endpoint; and the control channel refusing clients
// without the CCM's certificate.
func TestLayer2(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)

	t.Run("three services", func(t *testing.T) {
		owners := map[string]int{}
		vips := map[string]netip.Addr{}
		for _, name := range []string{"svc1", "svc2", "svc3"} {
			c.createService(lbService("default", name, nil))
		}
		for _, name := range []string{"svc1", "svc2", "svc3"} {
			vip := c.vip("default", name)
			vips[name] = vip
			node := checkAnnouncer(t, ctx, r, vip)
			owners[node]++
			c.waitEvent("default", name, corev1.EventTypeNormal, "VIPAnnounced", vip.String()+" announced from node "+node)
			t.Logf("%s: %s announced by %s", name, vip, node)
		}
		if len(owners) < 2 {
			t.Errorf("all three VIPs on one node: %v", owners)
		}
		// Only the announcing node answers: other nodes route the pool
		// locally (kube-proxy's binding) but keep quiet (arp_ignore=1).
		for name, vip := range vips {
			for i := 0; i < 5; i++ {
				if _, err := r.Reach(ctx, vip, time.Second); err != nil {
					t.Errorf("%s: attempt %d: %v", name, i, err)
				}
			}
		}
	})

	t.Run("allocateLoadBalancerNodePorts false", func(t *testing.T) {
		c.createService(lbService("default", "no-nodeports", nil, func(s *corev1.Service) {
			s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
		}))
		checkAnnouncer(t, ctx, r, c.vip("default", "no-nodeports"))
	})

	t.Run("delete stops replies", func(t *testing.T) {
		c.createService(lbService("default", "doomed", nil))
		vip := c.vip("default", "doomed")
		checkAnnouncer(t, ctx, r, vip)
		if err := c.cp.Client.CoreV1().Services("default").Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(15*time.Second, func() error {
			if err := r.Client.FlushNeighbors(); err != nil {
				return err
			}
			if node, err := r.Reach(ctx, vip, 500*time.Millisecond); err == nil {
				return fmt.Errorf("%s still answered by %s", vip, node)
			}
			if neigh, _ := r.Client.Neighbors(); neigh[vip] != nil {
				return fmt.Errorf("a node still answers ARP for %s (%s)", vip, neigh[vip])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("IPv6 over NDP", func(t *testing.T) {
		c.createService(lbService("default", "v6", nil, func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		}))
		vip := c.vip("default", "v6")
		if !vip.Is6() || !rig.PoolV6.Contains(vip) {
			t.Fatalf("v6 got %s, want an address in %s", vip, rig.PoolV6)
		}
		node := checkAnnouncer(t, ctx, r, vip)
		t.Logf("%s announced by %s over NDP", vip, node)
	})

	t.Run("externalTrafficPolicy Local follows the endpoint", func(t *testing.T) {
		c.createService(lbService("default", "local", nil, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}))
		vip := c.vip("default", "local")
		// No endpoint yet: no node may announce.
		c.waitEvent("default", "local", corev1.EventTypeWarning, "NoAnnouncingNode", "no ready endpoint on the node")
		for _, target := range []string{"node-b", "node-c", "node-a"} {
			setEndpoint(t, ctx, c, "default", "local", target)
			err := rig.Eventually(15*time.Second, func() error {
				_ = r.Client.FlushNeighbors()
				node, err := r.Reach(ctx, vip, 500*time.Millisecond)
				if err != nil {
					return err
				}
				if node != target {
					return fmt.Errorf("%s answered by %s, want %s (the endpoint's node)", vip, node, target)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			checkAnnouncer(t, ctx, r, vip)
		}
	})

	t.Run("control channel needs the CCM's certificate", func(t *testing.T) {
		testControlChannelAuth(t, ctx, c, r)
	})

	t.Run("CCM restart keeps every VIP in place", func(t *testing.T) {
		owners := map[netip.Addr]string{}
		for _, name := range []string{"svc1", "svc2", "svc3"} {
			vip := c.vip("default", name)
			owners[vip] = checkAnnouncer(t, ctx, r, vip)
		}
		vip := c.vip("default", "svc1")
		probe := r.Client.StartProbe(netip.AddrPortFrom(vip, rig.ServicePort), rig.ProbeInterval, rig.ProbeTimeout)
		takeovers := map[string]int{}
		for _, n := range r.Nodes {
			takeovers[n.Name] = strings.Count(n.Speaker.Log(), "CCM took over the speaker")
		}
		// The old leader dies; speakers keep announcing meanwhile.
		if err := r.CCM.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = r.CCM.Wait(5 * time.Second)
		time.Sleep(time.Second)
		if err := r.StartCCM("ironlb-ccm-2", false); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(30*time.Second, func() error {
			for _, n := range r.Nodes {
				if strings.Count(n.Speaker.Log(), "CCM took over the speaker") <= takeovers[n.Name] {
					return fmt.Errorf("the new CCM has not reached %s's speaker", n.Name)
				}
			}
			return nil
		})
		if err != nil {
			probe.Stop()
			t.Fatal(err)
		}
		// Keep probing a moment past the takeover: 20 more attempts.
		seen := len(probe.Results())
		if err := rig.Eventually(10*time.Second, func() error {
			if n := len(probe.Results()); n < seen+20 {
				return fmt.Errorf("%d probe results, waiting for %d", n, seen+20)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		rs := probe.Stop()
		if fails := netrig.Failures(rs); len(fails) > 0 {
			t.Errorf("the client lost %d of %d connections to %s during the CCM change (first: %v)", len(fails), len(rs), vip, fails[0].Err)
		}
		for vip, was := range owners {
			if now := checkAnnouncer(t, ctx, r, vip); now != was {
				t.Errorf("%s moved from %s to %s when the CCM restarted", vip, was, now)
			}
		}
	})

	t.Run("speaker SIGTERM is a restart: exits 0, withdraws nothing", func(t *testing.T) {
		// Issue 21, item 6: a speaker with the "restart" capability ends
		// its streams with ReasonRestarting and withdraws nothing; the CCM
		// keeps its VIPs on the node (its host refuses connections) until
		// the new process connects. The rolling restart itself is
		// TestLayer2RollingRestart's.
		vip := c.vip("default", "svc2")
		owner := r.Node(checkAnnouncer(t, ctx, r, vip))
		back := strings.Count(r.CCM.Log(), "Restarted speaker is back")
		withdrew := strings.Count(owner.Speaker.Log(), "Withdrew VIP")
		if err := owner.Speaker.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := owner.Speaker.Wait(10 * time.Second); err != nil {
			t.Fatalf("speaker did not exit: %v", err)
		}
		if code := owner.Speaker.ExitCode(); code != 0 {
			t.Errorf("speaker exit code %d, want 0", code)
		}
		if strings.Count(owner.Speaker.Log(), "Withdrew VIP") > withdrew {
			t.Error("speaker withdrew VIPs on SIGTERM; a restart withdraws nothing")
		}
		if err := r.StartSpeaker(ctx, owner); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(15*time.Second, func() error {
			if strings.Count(r.CCM.Log(), "Restarted speaker is back") > back {
				return nil
			}
			return fmt.Errorf("the CCM has not seen %s's restarted speaker back", owner.Name)
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Client.FlushNeighbors()
		if now := checkAnnouncer(t, ctx, r, vip); now != owner.Name {
			t.Errorf("%s moved from %s to %s across its speaker's restart", vip, owner.Name, now)
		}
	})

	t.Run("failover", func(t *testing.T) {
		c.createService(lbService("default", "failover", nil))
		vip := c.vip("default", "failover")
		for _, mode := range []rig.FailureMode{rig.Crash, rig.Silent} {
			f, err := r.MeasureFailover(ctx, vip, mode)
			if err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			if f.To == f.From || f.To == "" {
				t.Errorf("%s: VIP did not move away from %s (now %q)", mode, f.From, f.To)
			}
			t.Logf("%s failover %s → %s: client cut off for %s (%d failed attempts)", mode, f.From, f.To, f.Outage.Round(time.Millisecond), f.Failed)
			c.waitEvent("default", "failover", corev1.EventTypeNormal, "VIPMoved", "moved from node "+f.From+" to node "+f.To)
		}
		// Every VIP is still reachable after the repairs.
		for _, name := range []string{"svc1", "svc2", "svc3", "failover"} {
			checkAnnouncer(t, ctx, r, c.vip("default", name))
		}
	})

	t.Run("metrics and where is my VIP", func(t *testing.T) {
		vip := c.vip("default", "svc1")
		owner := checkAnnouncer(t, ctx, r, vip)
		want := vip.String() + "=" + owner
		err := rig.Eventually(15*time.Second, func() error {
			svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "svc1", metav1.GetOptions{})
			if err != nil {
				return err
			}
			cond := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced")
			if cond == nil || cond.Status != metav1.ConditionTrue || cond.Message != want {
				return fmt.Errorf("condition ironlb.dev/Announced = %+v, want True with message %q", cond, want)
			}
			if _, ok := svc.Annotations["ironlb.dev/announced-by"]; ok {
				return fmt.Errorf("the Service still carries the old ironlb.dev/announced-by annotation")
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		ccm, err := r.CCMMetrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{
			`ironlb_pool_addresses{family="IPv4",pool="lan",state="total"} 20`,
			`ironlb_pool_addresses{family="IPv6",pool="lan",state="total"} 32`,
			`ironlb_pool_addresses{family="IPv4",pool="lan",state="used"}`,
			`ironlb_allocations_total{pool="lan"}`,
			`ironlb_announcements{node="` + owner + `"}`,
			`ironlb_speaker_connected{node="node-a"} 1`,
			`ironlb_speaker_connected{node="node-b"} 1`,
			`ironlb_speaker_connected{node="node-c"} 1`,
			`ironlb_speaker_version_lag{node="node-a"} 0`,
			`ironlb_failovers_total{reason="speaker_lost"}`,
			`ironlb_speaker_loss_detection_seconds_count`,
			`ironlb_unannounced_vips 0`,
		} {
			if !strings.Contains(ccm, m) {
				t.Errorf("CCM /metrics lacks %s", m)
			}
		}
		sp, err := r.SpeakerMetrics(ctx, r.Node(owner))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{
			`ironlb_speaker_ccm_streams 1`,
			`ironlb_speaker_announced_vips{state="failed"} 0`,
			`ironlb_speaker_interface_usable{interface="eth0"} 1`,
			`ironlb_speaker_instructions_total{kind="heartbeat",result="applied"}`,
		} {
			if !strings.Contains(sp, m) {
				t.Errorf("speaker /metrics lacks %s", m)
			}
		}
		hz, err := r.CCMGet(ctx, "/healthz?verbose")
		if err != nil || !strings.Contains(hz, "[+]ironlb ok") {
			t.Errorf("CCM /healthz?verbose = %q, %v; want the ironlb check passing", hz, err)
		}
		rz, err := r.SpeakerGet(ctx, r.Node(owner), "/readyz")
		if err != nil || strings.TrimSpace(rz) != "ok" {
			t.Errorf("speaker /readyz = %q, %v", rz, err)
		}
		if t.Failed() {
			t.Logf("CCM metrics (ironlb_ lines):\n%s", grepLines(ccm, "ironlb_"))
			t.Logf("speaker metrics (ironlb_ lines):\n%s", grepLines(sp, "ironlb_"))
		}
	})
}

// setEndpoint makes the Service's only ready endpoint live on node, as the
// EndpointSlice controller would after its pod moved there.
func setEndpoint(t *testing.T, ctx context.Context, c *cluster, namespace, svc, node string) {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-ep", Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "e2e.ironlb.dev"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To(node),
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080))}},
	}
	cl := c.cp.Client.DiscoveryV1().EndpointSlices(namespace)
	cur, err := cl.Get(ctx, slice.Name, metav1.GetOptions{})
	if err == nil {
		slice.ResourceVersion = cur.ResourceVersion
		_, err = cl.Update(ctx, slice, metav1.UpdateOptions{})
	} else {
		_, err = cl.Create(ctx, slice, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("setting endpoint of %s on %s: %v", svc, node, err)
	}
}

// testControlChannelAuth dials node-a's speaker from the client's namespace
// with no certificate, with the speakers' own certificate, and with a
// certificate of another CA naming the CCM: each must fail to change
// anything. A CCM certificate from the right CA is accepted (the control).
func testControlChannelAuth(t *testing.T, ctx context.Context, c *cluster, r *rig.L2) {
	node := r.Node("node-a")
	target := net.JoinHostPort(node.IPv4.String(), "7473")
	caSecret, err := c.cp.Client.CoreV1().Secrets("ironlb-system").Get(ctx, pki.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCA(caSecret.Data["ca.crt"], caSecret.Data["ca.key"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	issue := func(ca *pki.CA, identity string) tls.Certificate {
		certPEM, keyPEM, err := ca.Issue(identity, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	speakerCert := issue(ca, pki.NodeIdentity("node-b")) // what another node's speaker holds
	other, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before, err := r.Announcing(ctx, node)
	if err != nil || len(before) == 0 {
		t.Fatalf("node-a announces %v (%v); the test needs a VIP there", before, err)
	}

	tlsWith := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS13, Certificates: certs,
			// The speaker's identity is checked by the CCM; here only the
			// client side matters.
			InsecureSkipVerify: true, //nolint:gosec // test client probing the server's checks
		})
	}
	cases := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"plaintext", insecure.NewCredentials(), false},
		{"TLS without client certificate", tlsWith(), false},
		{"node certificate of another speaker", tlsWith(speakerCert), false},
		{"CCM identity from another CA", tlsWith(issue(other, pki.CCMIdentity)), false},
		{"CCM certificate (control)", tlsWith(issue(ca, pki.CCMIdentity)), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tryInstruct(ctx, r, target, tc.creds, !tc.ok)
			if tc.ok && err != nil {
				t.Fatalf("CCM certificate refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("the speaker accepted an instruction")
			}
			t.Logf("result: %v", err)
		})
	}
	// The control only opened a stream and read the first report, so no
	// case may have changed what node-a announces.
	if after, err := r.Announcing(ctx, node); err != nil || !slices.Equal(before, after) {
		t.Errorf("node-a announced %v before and %v after (%v)", before, after, err)
	}
}

// tryInstruct opens a Sync stream, reads the speaker's first report and
// answers a heartbeat. With withdrawAll it first sends an empty snapshot,
// which would withdraw every VIP if the speaker accepted it.
func tryInstruct(ctx context.Context, r *rig.L2, target string, creds credentials.TransportCredentials, withdrawAll bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return r.Client.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := speakerv1.NewSpeakerClient(conn).Sync(ctx)
	if err != nil {
		return err
	}
	if withdrawAll {
		if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: &speakerv1.Snapshot{Version: 1, Leader: "intruder"}}}); err != nil {
			return err
		}
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: &speakerv1.Heartbeat{Seq: 42}}}); err != nil {
		return err
	}
	for {
		rep, err := stream.Recv()
		if err != nil {
			return err
		}
		if rep.GetHeartbeatSeq() == 42 {
			return nil
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
