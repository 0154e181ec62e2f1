// Package chaos runs IronLB's real binaries on the layer-2 rig under
// faults, while an independent watcher (its own informer, none of IronLB's
// code) checks the invariants of DESIGN.md: no address on two Services
// unless they share it under one key, no Service's address ever changes,
// every Service gets an address soon whenever its pool has one free, and
// every announced VIP answers the client.
//
// The scenarios, in order, on one rig with two CCM replicas as deploy/
// ships them (leader election on, the shipped flags), restarted like the
// kubelet restarts a Deployment's containers:
//   - SIGKILL of the leading CCM at random moments, during churn: Services
//     created, updated (ports, annotations, sharing keys) and deleted, more
//     of them at times than the pool holds;
//   - the CCM's network cut (its namespace's link down) for a few seconds,
//     several times: no VIP may move, the client may lose no connection;
//   - kube-apiserver stopped (SIGSTOP): clients keep reaching every VIP,
//     and the CCM recovers by itself and serves the backlog afterwards;
//   - a leader handover while the old leader still reaches the speakers
//     (SIGSTOP, then SIGCONT once the new leader took over): the speakers
//     follow only the new term.
package chaos

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/ironlb/ironlb/test/rig"
)

// Config sizes a chaos run.
type Config struct {
	Seed uint64
	// ExtraPrefixes are pool prefixes beyond the rig's PoolV4.
	ExtraPrefixes []netip.Prefix
	// Low and High bound the number of churned Services; ChurnRate is in
	// operations per second.
	Low, High int
	ChurnRate float64
	// Sentinels are Services no churn touches, whose VIPs the client
	// connects to every 10 ms during the faults.
	Sentinels int
	// Kills of the leading CCM; Blips of the CCM's network, each lasting
	// BlipDuration; APIOutage is how long kube-apiserver is stopped;
	// Handovers with the old leader stopped and resumed.
	Kills        int
	Blips        int
	BlipDuration time.Duration
	APIOutage    time.Duration
	Handovers    int
	// LogDir, when set, keeps the control plane's data and every process's
	// log there after the run.
	LogDir string
	// CCMArgs are extra ironlb-ccm flags (for debugging, such as -v=2).
	CCMArgs []string
}

// Short is the run inside make test: a 64-address pool, a few of each
// fault.
func Short() Config {
	return Config{
		Seed:          1,
		ExtraPrefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.224/27")},
		Low:           40, High: 70, ChurnRate: 5, Sentinels: 4,
		Kills: 3, Blips: 2, BlipDuration: 3 * time.Second, APIOutage: 20 * time.Second, Handovers: 1,
	}
}

// Full is make chaos: about 600 addresses, up to 620 Services, 100 kills of
// the leader, ten blips, a 60 s API-server outage.
func Full() Config {
	return Config{
		Seed: 1,
		ExtraPrefixes: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.224/27"),
			netip.MustParsePrefix("198.51.100.0/24"),
			netip.MustParsePrefix("203.0.113.0/24"),
		},
		Low: 450, High: 620, ChurnRate: 10, Sentinels: 6,
		Kills: 100, Blips: 10, BlipDuration: 3 * time.Second, APIOutage: 60 * time.Second, Handovers: 3,
	}
}

// pool returns the pool's prefixes.
func (c Config) pool() []netip.Prefix { return append([]netip.Prefix{rig.PoolV4}, c.ExtraPrefixes...) }

// Figures are what a run measured.
type Figures struct {
	Kills                     int
	ServicesCreated           int
	DoubleAllocations         int
	IPChanges                 int
	UnassignedMax             time.Duration
	UnassignedMaxOf           string
	UnannouncedMax            time.Duration
	UnannouncedMaxOf          string
	VIPsMovedOnBlip           int
	FailedConnectionsBlip     int
	ConnectionsBlip           int
	FailedConnectionsAPI      int
	ConnectionsAPI            int
	APIRecovery               time.Duration
	FailedConnectionsKills    int
	ConnectionsKills          int
	VIPsMovedOnKills          int
	StaleLeaderInstructions   int
	RefusedStaleInstructions  int
	SampledVIPs, Unanswered   int
	VIPsMovedOnAPIOutage      int
	VIPsMovedOnHandover       int
	FailedConnectionsHandover int
}

// Print writes the figures as BENCH lines.
func (f Figures) Print(w io.Writer) {
	line := func(name string, v any, unit string) { fmt.Fprintf(w, "BENCH %s %v %s\n", name, v, unit) }
	line("chaos_ccm_kills", f.Kills, "kills")
	line("chaos_services_created", f.ServicesCreated, "services")
	line("chaos_double_allocations", f.DoubleAllocations, "count")
	line("chaos_ip_changes", f.IPChanges, "count")
	line("chaos_unassigned_max_s", trim(f.UnassignedMax.Seconds()), "s")
	line("chaos_unannounced_max_s", trim(f.UnannouncedMax.Seconds()), "s")
	line("chaos_vips_moved_on_ccm_kills", f.VIPsMovedOnKills, "count")
	line("chaos_failed_connections_ccm_kills", f.FailedConnectionsKills, "connections")
	line("chaos_vips_moved_on_ccm_blip", f.VIPsMovedOnBlip, "count")
	line("chaos_failed_connections_ccm_blip", f.FailedConnectionsBlip, "connections")
	line("chaos_failed_connections_apiserver_outage", f.FailedConnectionsAPI, "connections")
	line("chaos_vips_moved_on_apiserver_outage", f.VIPsMovedOnAPIOutage, "count")
	line("chaos_apiserver_recovery_s", trim(f.APIRecovery.Seconds()), "s")
	line("chaos_stale_leader_instructions_applied", f.StaleLeaderInstructions, "count")
	line("chaos_vips_moved_on_handover", f.VIPsMovedOnHandover, "count")
	line("chaos_failed_connections_handover", f.FailedConnectionsHandover, "connections")
	line("chaos_unanswered_vips", f.Unanswered, "count")
}

func trim(v float64) string { return fmt.Sprintf("%.3f", v) }

// Violations lists the counts that must be zero and are not.
func (f Figures) Violations() []string {
	var out []string
	for name, v := range map[string]int{
		"double allocations":                       f.DoubleAllocations,
		"address changes":                          f.IPChanges,
		"VIPs moved on CCM kills":                  f.VIPsMovedOnKills,
		"failed connections during CCM kills":      f.FailedConnectionsKills,
		"VIPs moved on CCM blips":                  f.VIPsMovedOnBlip,
		"failed connections during CCM blips":      f.FailedConnectionsBlip,
		"failed connections during the API outage": f.FailedConnectionsAPI,
		"VIPs moved on the API outage":             f.VIPsMovedOnAPIOutage,
		"instructions of a stale leader applied":   f.StaleLeaderInstructions,
		"VIPs moved on the leader handover":        f.VIPsMovedOnHandover,
		"failed connections during the handover":   f.FailedConnectionsHandover,
		"announced VIPs that did not answer":       f.Unanswered,
	} {
		if v != 0 {
			out = append(out, fmt.Sprintf("%s: %d", name, v))
		}
	}
	return out
}

// Log receives the run's progress; default stderr.
var (
	logMu  sync.Mutex
	logOut io.Writer = os.Stderr
)

// SetLog sends the run's progress to w.
func SetLog(w io.Writer) {
	logMu.Lock()
	logOut = w
	logMu.Unlock()
}

func logf(format string, args ...any) {
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(logOut, "%s chaos: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}
