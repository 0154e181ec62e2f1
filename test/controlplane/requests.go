package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// RequestCounts reads the API server's apiserver_request_total counter,
// summed by "VERB resource[/subresource]" (for example "PATCH
// services/status"). The difference of two readings counts the requests
// made in between.
func (cp *ControlPlane) RequestCounts(ctx context.Context) (map[string]float64, error) {
	body, err := cp.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("parsing the API server's metrics: %w", err)
	}
	out := map[string]float64{}
	mf := families["apiserver_request_total"]
	if mf == nil {
		return out, nil
	}
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		key := labels["verb"] + " " + labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += m.GetCounter().GetValue()
	}
	return out, nil
}

// Writes returns the write requests (POST, PUT, PATCH, DELETE) between two
// readings of RequestCounts, by "VERB resource".
func Writes(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		verb, _, _ := strings.Cut(k, " ")
		switch verb {
		case "POST", "PUT", "PATCH", "DELETE":
			if d := v - before[k]; d > 0 {
				out[k] = d
			}
		}
	}
	return out
}

// FormatCounts renders counts sorted by key, for logs.
func FormatCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + strconv.FormatFloat(m[k], 'f', -1, 64) + " ")
	}
	return strings.TrimSpace(b.String())
}
