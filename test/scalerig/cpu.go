package scalerig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
)

// cpuMeter measures the share of one core processes used between its
// start and percent.
type cpuMeter struct {
	pids  []int
	start time.Time
	used  []time.Duration
}

func startCPU(pids ...int) (*cpuMeter, error) {
	m := &cpuMeter{pids: pids, start: time.Now()}
	for _, p := range pids {
		t, err := procs.CPUTime(p)
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
		t, err := procs.CPUTime(p)
		if err != nil {
			return nil, err
		}
		out[i] = 100 * float64(t-m.used[i]) / float64(wall)
	}
	return out, nil
}

// measureCPU runs work (which takes about d) while it measures the CCM's,
// the API server's and this process's CPU, and reports the first two as
// <what>_pct figures; with Options.ProfileDir it also takes the CCM's CPU
// profile over d.
func (r *Rig) measureCPU(ctx context.Context, what string, d time.Duration, work func() error) error {
	m, err := startCPU(r.CCM.Pid(), r.CP.APIServerPid(), os.Getpid())
	if err != nil {
		return err
	}
	profiled := make(chan error, 1)
	stopOwn := func() error { return nil }
	if r.opts.ProfileDir != "" {
		go func() { profiled <- r.profileCCM(ctx, d, r.Name+"_"+what+".pprof") }()
		if stopOwn, err = profileOwn(filepath.Join(r.opts.ProfileDir, r.Name+"_"+what+"_rig.pprof")); err != nil {
			return err
		}
	} else {
		profiled <- nil
	}
	werr := work()
	perr := errors.Join(<-profiled, stopOwn())
	if werr != nil {
		return werr
	}
	if perr != nil {
		return perr
	}
	pct, err := m.percent()
	if err != nil {
		return err
	}
	r.report("ccm_cpu_"+what+"_pct", pct[0], "%")
	r.report("apiserver_cpu_"+what+"_pct", pct[1], "%")
	r.logf("%s over %s: CCM %.1f%%, kube-apiserver %.1f%%, simulated speakers (and the rig) %.1f%% of one core", what, d, pct[0], pct[1], pct[2])
	return nil
}

// profileOwn starts a CPU profile of this process (the simulated
// speakers and the rig) into path; the returned func stops it.
func profileOwn(path string) (func() error, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("profiling the rig: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("profiling the rig: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("profiling the rig: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// Idle reports the CCM's and the API server's CPU (percent of one core)
// over d of steady state: every VIP announced, nothing changing, only
// heartbeats flowing.
func (r *Rig) Idle(ctx context.Context, d time.Duration) error {
	return r.measureCPU(ctx, "idle", d, func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	})
}

// profileCCM fetches a CPU profile of d from the leading CCM (see
// fetchProfile).
func (r *Rig) profileCCM(ctx context.Context, d time.Duration, name string) error {
	return r.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())), d+time.Minute, name, "CPU")
}

// fetchProfile fetches /debug/pprof/<what> from the leading CCM's secure
// port (on by default: --profiling) inside the rig's namespace, with the
// admin's client certificate, and writes it to Options.ProfileDir/name.
func (r *Rig) fetchProfile(ctx context.Context, what string, timeout time.Duration, name, kind string) error {
	tlsCfg, err := rest.TLSConfigFor(r.CP.Config)
	if err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	tlsCfg = tlsCfg.Clone()
	tlsCfg.InsecureSkipVerify = true // the CCM's self-signed serving certificate
	tlsCfg.RootCAs = nil
	tr := &http.Transport{TLSClientConfig: tlsCfg, DialContext: dialIn(r.host)}
	defer tr.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/debug/pprof/%s", r.ccmPort, what)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("profiling the CCM: %s: %s", resp.Status, b)
	}
	if err := os.MkdirAll(r.opts.ProfileDir, 0o755); err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	path := filepath.Join(r.opts.ProfileDir, name)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("profiling the CCM: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	r.logf("CCM %s profile in %s (go tool pprof -top %s)", kind, path, path)
	return f.Close()
}

// dialIn dials from inside host's namespace.
func dialIn(host *netrig.Host) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := host.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
