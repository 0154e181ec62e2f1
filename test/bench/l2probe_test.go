package main

import (
	"math"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	a := `# TYPE ironlb_speaker_probe_duration_seconds histogram
ironlb_speaker_probe_duration_seconds_bucket{le="0.02"} 0
ironlb_speaker_probe_duration_seconds_bucket{le="0.04"} 2
ironlb_speaker_probe_duration_seconds_bucket{le="0.08"} 4
ironlb_speaker_probe_duration_seconds_bucket{le="+Inf"} 4
ironlb_speaker_probe_duration_seconds_sum 0.17
ironlb_speaker_probe_duration_seconds_count 4
`
	b := `ironlb_speaker_probe_duration_seconds_bucket{node="x",le="0.02"} 0
ironlb_speaker_probe_duration_seconds_bucket{node="x",le="0.04"} 0
ironlb_speaker_probe_duration_seconds_bucket{node="x",le="0.08"} 4
ironlb_speaker_probe_duration_seconds_bucket{node="x",le="+Inf"} 4
`
	for _, tc := range []struct {
		name      string
		in        []string
		q, want   float64
		wantCount float64
	}{
		{"one speaker, median inside the second bucket", []string{a}, 0.5, 0.04, 4},
		{"two speakers summed", []string{a, b}, 0.5, 0.04 + 0.04*(4-2)/(8-2), 8},
		{"a quartile inside the second bucket", []string{a}, 0.25, 0.02 + 0.02*(1-0)/(2-0), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, count, err := histogramQuantile(tc.q, probeMetric, tc.in...)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tc.want) > 1e-9 || count != tc.wantCount {
				t.Errorf("histogramQuantile = %v, %v; want %v, %v", got, count, tc.want, tc.wantCount)
			}
		})
	}
	if _, _, err := histogramQuantile(0.5, probeMetric, "other_metric 1\n"); err == nil {
		t.Error("no error for a missing histogram")
	}
}
