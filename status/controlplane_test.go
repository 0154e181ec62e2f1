package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/cpvip"
)

// fakeAPI answers the requests GatherControlPlane makes, as the API
// server would: the control-plane Nodes, kubeadm-config, and each node's
// /status through the node proxy.
type fakeAPI struct {
	nodes   []string
	kubeadm string // the controlPlaneEndpoint; "" for no ConfigMap
	// status is each node's answer: a body, or an error status code, or
	// hang (never answers: the per-node timeout ends it).
	status map[string]answer
}

type answer struct {
	code int
	body string
	hang bool
}

func (f *fakeAPI) RoundTrip(req *http.Request) (*http.Response, error) {
	reply := func(code int, body string) (*http.Response, error) {
		return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	}
	notFound := `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}`
	switch p := req.URL.Path; {
	case p == "/api/v1/namespaces/kube-system/configmaps/kubeadm-config":
		if f.kubeadm == "" {
			return reply(404, notFound)
		}
		cc := "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: " + f.kubeadm + "\n"
		b, _ := json.Marshal(map[string]any{"kind": "ConfigMap", "apiVersion": "v1", "metadata": map[string]any{"name": "kubeadm-config", "namespace": "kube-system"},
			"data": map[string]string{"ClusterConfiguration": cc}})
		return reply(200, string(b))
	case p == "/api/v1/nodes":
		if got := req.URL.Query().Get("labelSelector"); got != ControlPlaneNodeLabel {
			return reply(400, fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":400,"message":"selector %q"}`, got))
		}
		var items []map[string]any
		for _, n := range f.nodes {
			items = append(items, map[string]any{"metadata": map[string]any{"name": n}})
		}
		b, _ := json.Marshal(map[string]any{"kind": "NodeList", "apiVersion": "v1", "items": items})
		return reply(200, string(b))
	case strings.HasPrefix(p, "/api/v1/nodes/") && strings.HasSuffix(p, ":7476/proxy/status"):
		node := strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/nodes/"), ":7476/proxy/status")
		a, ok := f.status[node]
		switch {
		case !ok:
			return reply(503, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503,"message":"error trying to reach service: dial tcp 192.0.2.13:7476: connect: connection refused"}`)
		case a.hang:
			<-req.Context().Done()
			return nil, req.Context().Err()
		case a.code != 0:
			return reply(a.code, a.body)
		}
		return reply(200, a.body)
	}
	return reply(404, notFound)
}

func statusJSON(t *testing.T, st cpvip.Status) string {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGatherControlPlane(t *testing.T) {
	vip := "192.0.2.250"
	l2 := func(node, ip string, ready, serving bool, holder string, epoch uint64) cpvip.Status {
		return cpvip.Status{VIP: vip, Mode: "l2", Node: node, NodeIP: ip, APIServerReady: ready, Serving: serving, Holder: holder, Epoch: epoch}
	}
	bgp := func(node, ip string, ready, serving bool) cpvip.Status {
		return cpvip.Status{VIP: vip, Mode: "bgp", Node: node, NodeIP: ip, APIServerReady: ready, Serving: serving}
	}
	unreachable := "unreachable: error trying to reach service: dial tcp 192.0.2.13:7476: connect: connection refused"
	for _, tc := range []struct {
		name    string
		api     fakeAPI
		answers map[string]cpvip.Status // bodies of well-formed answers
		want    *ControlPlane
		// wantTable are lines the table must contain.
		wantTable []string
	}{{
		name: "layer 2, one node unreachable",
		api:  fakeAPI{nodes: []string{"node-3", "node-1", "node-2"}, kubeadm: vip + ":6443"},
		answers: map[string]cpvip.Status{
			"node-1": l2("node-1", "192.0.2.11", true, true, "node-1", 3),
			"node-2": func() cpvip.Status {
				s := l2("node-2", "192.0.2.12", false, false, "node-1", 3)
				s.APIServerError = "Get \"https://127.0.0.1:6443/readyz\": connection refused"
				return s
			}(),
		},
		want: &ControlPlane{VIPs: []string{vip}, Modes: []string{"l2"}, Holders: []string{"node-1"}, Serving: []string{"node-1"}, Nodes: []ControlPlaneNode{
			{Node: "node-1"}, {Node: "node-2"}, {Node: "node-3", Error: unreachable},
		}},
		wantTable: []string{
			"VIP 192.0.2.250 (l2), held by node-1",
			"node-1  ready                                                               yes      node-1       3      ok (192.0.2.11)\n",
			"node-2  not ready: Get \"https://127.0.0.1:6443/readyz\": connection refused  no       node-1       3      ok (192.0.2.12)\n",
			"node-3  -                                                                   -        -            -      " + unreachable + "\n",
		},
	}, {
		name: "layer 2, the nodes disagree about the holder",
		api:  fakeAPI{nodes: []string{"node-1", "node-2", "node-3"}},
		answers: map[string]cpvip.Status{
			"node-1": l2("node-1", "192.0.2.11", true, true, "node-1", 3),
			"node-2": l2("node-2", "192.0.2.12", true, true, "node-2", 4),
			"node-3": l2("node-3", "192.0.2.13", true, false, "node-2", 4),
		},
		want: &ControlPlane{VIPs: []string{vip}, Modes: []string{"l2"}, Holders: []string{"node-1", "node-2"}, Serving: []string{"node-1", "node-2"},
			Disagreement: "the nodes disagree about the holder ([node-1] see node-1, [node-2 node-3] see node-2): a partition, or a move under way; several nodes hold the VIP at once [node-1 node-2]: a partition",
			Nodes:        []ControlPlaneNode{{Node: "node-1"}, {Node: "node-2"}, {Node: "node-3"}}},
		wantTable: []string{"WARNING: the nodes disagree about the holder"},
	}, {
		name: "BGP: the advertisers",
		api:  fakeAPI{nodes: []string{"node-1", "node-2"}},
		answers: map[string]cpvip.Status{
			"node-1": bgp("node-1", "192.0.2.11", true, true),
			"node-2": bgp("node-2", "192.0.2.12", true, true),
		},
		want: &ControlPlane{VIPs: []string{vip}, Modes: []string{"bgp"}, Serving: []string{"node-1", "node-2"},
			Nodes: []ControlPlaneNode{{Node: "node-1"}, {Node: "node-2"}}},
		wantTable: []string{"VIP 192.0.2.250 (bgp), advertised by node-1,node-2"},
	}, {
		name: "no control-plane speaker, no VIP: no section",
		api:  fakeAPI{nodes: []string{"node-1"}},
		want: nil,
	}, {
		name: "no control-plane speaker answers, kubeadm-config names the VIP",
		api:  fakeAPI{nodes: []string{"node-1"}, kubeadm: vip + ":6443"},
		want: &ControlPlane{VIPs: []string{vip}, Nodes: []ControlPlaneNode{{Node: "node-1", Error: unreachable}}},
	}, {
		name: "hostile and broken answers are errors of their node only",
		api: fakeAPI{nodes: []string{"big", "extra", "hang", "liar", "trailing", "mode", "good"}, status: map[string]answer{
			"big":      {body: `{"vip":"` + strings.Repeat("1", maxControlPlaneStatus) + `"}`},
			"extra":    {body: `{"vip":"192.0.2.250","mode":"l2","node":"extra","nodeIP":"192.0.2.14","apiserverReady":true,"serving":false,"surprise":1}`},
			"hang":     {hang: true},
			"liar":     {body: `{"vip":"192.0.2.250","mode":"l2","node":"node-1","nodeIP":"192.0.2.14","apiserverReady":true,"serving":true}`},
			"trailing": {body: `{"vip":"192.0.2.250","mode":"l2","node":"trailing","nodeIP":"192.0.2.14","apiserverReady":true,"serving":false} {}`},
			"mode":     {body: `{"vip":"192.0.2.250","mode":"l3","node":"mode","nodeIP":"192.0.2.14","apiserverReady":true,"serving":false}`},
		}},
		answers: map[string]cpvip.Status{"good": l2("good", "192.0.2.11", true, true, "good", 1)},
		want: &ControlPlane{VIPs: []string{vip}, Modes: []string{"l2"}, Holders: []string{"good"}, Serving: []string{"good"}, Nodes: []ControlPlaneNode{
			{Node: "big", Error: "/status is larger than 65536 bytes"},
			{Node: "extra", Error: `/status does not parse: json: unknown field "surprise"`},
			{Node: "good"},
			{Node: "hang", Error: `unreachable: Get "https://api.test/api/v1/nodes/hang:7476/proxy/status": context deadline exceeded`},
			{Node: "liar", Error: `/status of node liar says it is node "node-1"`},
			{Node: "mode", Error: `/status names mode "l3", want l2 or bgp`},
			{Node: "trailing", Error: "/status does not parse: data after the object"},
		}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			api := tc.api
			if api.status == nil {
				api.status = map[string]answer{}
			}
			for node, st := range tc.answers {
				api.status[node] = answer{body: statusJSON(t, st)}
			}
			kube, err := kubernetes.NewForConfig(&rest.Config{Host: "https://api.test", Transport: &api})
			if err != nil {
				t.Fatal(err)
			}
			got := GatherControlPlane(context.Background(), kube, ControlPlaneOptions{Timeout: 200 * time.Millisecond})
			// The answers themselves are compared through the summary and
			// the table; here only which nodes answered.
			if got != nil {
				for i := range got.Nodes {
					if got.Nodes[i].Status != nil && got.Nodes[i].Error != "" {
						t.Errorf("node %s has both a status and an error", got.Nodes[i].Node)
					}
				}
			}
			if diff := cmp.Diff(tc.want, got, cmp.FilterPath(func(p cmp.Path) bool { return strings.HasSuffix(p.String(), "Nodes.Status") }, cmp.Ignore())); diff != "" {
				t.Errorf("GatherControlPlane (-want +got):\n%s", diff)
			}
			if got == nil {
				return
			}
			for _, n := range got.Nodes {
				if _, answered := tc.answers[n.Node]; answered != (n.Status != nil) {
					t.Errorf("node %s: status %+v, want one: %v", n.Node, n.Status, answered)
				}
			}
			var buf bytes.Buffer
			got.write(&buf)
			for _, line := range tc.wantTable {
				if !strings.Contains(buf.String(), line) {
					t.Errorf("table lacks %q:\n%s", line, buf.String())
				}
			}
		})
	}
}

// TestControlPlaneTableEscapes: what a speaker answers (its errors, names)
// reaches the terminal escaped.
func TestControlPlaneTableEscapes(t *testing.T) {
	cp := &ControlPlane{VIPs: []string{"192.0.2.250"}, Modes: []string{"l2"}, Serving: []string{"node-1\x1b[2J"},
		Disagreement: "x\x1b]0;title\a", Nodes: []ControlPlaneNode{
			{Node: "node-1", Status: &cpvip.Status{VIP: "192.0.2.250", Mode: "l2", Node: "node-1", NodeIP: "192.0.2.11\r", APIServerError: "boom\x1b[31m", Holder: "h\x00"}},
			{Node: "node-2", Error: "unreachable: \x1b[1mbold"},
		}}
	var buf bytes.Buffer
	cp.write(&buf)
	if s := buf.String(); strings.ContainsAny(s, "\x1b\a\r\x00") {
		t.Errorf("table has control characters: %q", s)
	}
}
