package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/test/netrig"
)

// scaleProfile is where the scale group writes the CCM's CPU profiles
// (idle and churn); empty writes none.
var scaleProfile = flag.String("scale-profile", "", "scale group: folder for the CCM's CPU profiles (pprof), taken over the idle and churn windows")

// cpuMeter measures the share of one core processes used between its
// start and stop.
type cpuMeter struct {
	pids  []int
	start time.Time
	used  []time.Duration
}

func startCPU(pids ...int) (*cpuMeter, error) {
	m := &cpuMeter{pids: pids, start: time.Now()}
	for _, p := range pids {
		t, err := cpuTime(p)
		if err != nil {
			return nil, err
		}
		m.used = append(m.used, t)
	}
	return m, nil
}

// percent is, for each process, its CPU time since start as a percentage
// of one core over the wall time since start.
func (m *cpuMeter) percent() ([]float64, error) {
	wall := time.Since(m.start)
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		t, err := cpuTime(p)
		if err != nil {
			return nil, err
		}
		out[i] = 100 * float64(t-m.used[i]) / float64(wall)
	}
	return out, nil
}

// profileCCM fetches a CPU profile of d from the CCM's secure port (its
// /debug/pprof, on by default: --profiling) inside host's namespace, with
// the admin's client certificate, and writes it to -scale-profile/name.
func profileCCM(ctx context.Context, host *netrig.Host, port int, admin *rest.Config, d time.Duration, name string) error {
	tlsCfg, err := rest.TLSConfigFor(admin)
	if err != nil {
		return err
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.InsecureSkipVerify = true // the CCM's self-signed serving certificate
	tlsCfg.RootCAs = nil
	tr := &http.Transport{
		TLSClientConfig: tlsCfg,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := host.Do(func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: d + time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("profiling the CCM: %s: %s", resp.Status, b)
	}
	if err := os.MkdirAll(*scaleProfile, 0o755); err != nil {
		return err
	}
	path := filepath.Join(*scaleProfile, name)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	fmt.Fprintf(os.Stderr, "bench: CCM CPU profile in %s (go tool pprof -top %s)\n", path, path)
	return f.Close()
}

// idle reports the CCM's and the API server's CPU (percent of one core)
// over d of steady state: every VIP announced, nothing changing, only
// heartbeats flowing; and the simulated speakers' process for scale. With
// -scale-profile, a CPU profile of the CCM over the same window.
func (r *scaleRig) idle(ctx context.Context, d time.Duration) error {
	m, err := startCPU(r.ccm.Pid(), r.cp.APIServerPid(), os.Getpid())
	if err != nil {
		return err
	}
	if *scaleProfile != "" {
		if err := profileCCM(ctx, r.host, r.ccmPort, r.cp.Config, d, r.name+"_idle.pprof"); err != nil {
			return err
		}
	} else {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	pct, err := m.percent()
	if err != nil {
		return err
	}
	report(r.name+"_ccm_cpu_idle_pct", pct[0], "%")
	report(r.name+"_apiserver_cpu_idle_pct", pct[1], "%")
	fmt.Fprintf(os.Stderr, "bench: idle over %s: CCM %.1f%%, kube-apiserver %.1f%%, simulated speakers %.1f%% of one core\n", d, pct[0], pct[1], pct[2])
	return nil
}
