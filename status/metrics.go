package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// speakerMetrics are the CCM's per-node speaker gauges, and the version
// each speaker reported.
type speakerMetrics struct {
	connected, healthy map[string]bool
	versions           map[string]string
}

// scrape reads ironlb_speaker_connected and ironlb_speaker_healthy from
// the CCM's /metrics.
func scrape(ctx context.Context, client *http.Client, url string) (*speakerMetrics, error) {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the metrics endpoint answered with a redirect, which is not followed")
		}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%s: the CCM wants a token allowed GET /metrics (such as the ServiceAccount ironlb-metrics-reader's)", resp.Status)
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("%s: %q", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	m := &speakerMetrics{connected: gauges(families["ironlb_speaker_connected"]), healthy: gauges(families["ironlb_speaker_healthy"]), versions: versions(families["ironlb_speaker_info"])}
	if families["ironlb_speaker_connected"] == nil {
		return nil, fmt.Errorf("no ironlb_speaker_connected in the metrics: is this the leading ironlb-ccm's /metrics?")
	}
	return m, nil
}

// gauges maps each series' node label to value == 1.
func gauges(f *dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "node" {
				out[l.GetValue()] = m.GetGauge().GetValue() == 1
			}
		}
	}
	return out
}

// versions maps each ironlb_speaker_info series' node to its version.
func versions(f *dto.MetricFamily) map[string]string {
	out := map[string]string{}
	for _, m := range f.GetMetric() {
		var node, version string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "node":
				node = l.GetValue()
			case "version":
				version = l.GetValue()
			}
		}
		if node != "" && version != "" {
			out[node] = version
		}
	}
	return out
}

// mergeMetrics adds connected/healthy to the speakers, and a speaker for
// each node the CCM knows that has no pod. The version a speaker reported
// to the CCM replaces the one its pod's image tag suggests.
func (st *Status) mergeMetrics(m *speakerMetrics) {
	known := map[string]bool{}
	for i := range st.Speakers {
		s := &st.Speakers[i]
		known[s.Node] = true
		c, h := m.connected[s.Node], m.healthy[s.Node]
		s.Connected, s.Healthy = &c, &h
		if v := m.versions[s.Node]; v != "" {
			s.Version = v
		}
	}
	for node, c := range m.connected {
		if !known[node] {
			h := m.healthy[node]
			st.Speakers = append(st.Speakers, Speaker{Node: node, Version: m.versions[node], Connected: &c, Healthy: &h})
		}
	}
	sort.Slice(st.Speakers, func(i, j int) bool { return st.Speakers[i].Node < st.Speakers[j].Node })
}
