package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/pki/pkitest"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/guard"
)

// The heartbeat group measures what the CCM's heartbeats cost at 500
// nodes: a real speakers.Manager (real gRPC, mTLS, enrollment) in this
// process against 500 real speaker.Agents (no-op announcers) served by a
// child process (this binary again, chosen by heartbeatChildEnv) on
// loopback addresses. Once every stream is connected it measures, for
// heartbeatWindow, this process's CPU and the heartbeats sent plus
// reports received per second, at the shipped defaults (75 ms × 3, paced
// to 2,000 heartbeats a second: 300 ms at 500 speakers) and unpaced
// (every stream at 75 ms, as before speakers.heartbeatRate).

const (
	heartbeatSpeakers = 500
	heartbeatWindow   = 10 * time.Second
	// heartbeatChildEnv, when set, makes this binary the speakers' child
	// process: "<CA file>,<first address>,<port>,<count>".
	heartbeatChildEnv = "IRONLB_BENCH_HEARTBEAT_SPEAKERS"
	heartbeatToken    = "speaker-on:"
)

func init() {
	if spec := os.Getenv(heartbeatChildEnv); spec != "" {
		if err := serveSpeakers(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bench speakers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func benchHeartbeat(ctx context.Context, _ int) error {
	waitQuiet(ctx)
	ctx = klog.NewContext(ctx, logr.Discard())
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", pkitest.TokenReview(heartbeatToken))
	bundle, err := pki.Bootstrap(ctx, cs, "kube-system")
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	dir, err := os.MkdirTemp("", "ironlb-bench-heartbeat-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	caFile := filepath.Join(dir, "ca.crt")
	if err := pki.WriteBundle(caFile, bundle.BundlePEM()); err != nil {
		return err
	}
	for i := range heartbeatSpeakers {
		if err := benchSpeakerPod(ctx, cs, benchNode(i)); err != nil {
			return err
		}
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	child, err := startSpeakers(ctx, fmt.Sprintf("%s,%s,%d,%d", caFile, benchNodeAddr(0), port, heartbeatSpeakers))
	if err != nil {
		return err
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	}()
	for term, c := range []struct {
		heartbeat time.Duration
		misses    int
		rate      int
		suffix    string
	}{
		{speakers.DefaultHeartbeat, speakers.DefaultMisses, 0, ""},
		{speakers.DefaultHeartbeat, speakers.DefaultMisses, -1, "_unpaced"},
	} {
		cpu, msgs, err := heartbeatCost(ctx, bundle, port, uint64(term+1), speakers.Options{Heartbeat: c.heartbeat, Misses: c.misses, HeartbeatRate: c.rate})
		if err != nil {
			return fmt.Errorf("heartbeat %s × %d (rate %d): %w", c.heartbeat, c.misses, c.rate, err)
		}
		report(fmt.Sprintf("ccm_heartbeat_cpu_%d_speakers%s", heartbeatSpeakers, c.suffix), cpu, "%")
		report(fmt.Sprintf("ccm_heartbeat_messages_%d_speakers%s", heartbeatSpeakers, c.suffix), msgs, "msgs/s")
	}
	return nil
}

// heartbeatCost connects a Manager to every speaker and measures, for
// heartbeatWindow, this process's CPU (percent of one core) and the
// messages (heartbeats sent, reports received) per second.
func heartbeatCost(ctx context.Context, bundle *pki.Bundle, port int, term uint64, pacing speakers.Options) (cpu, msgs float64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	opts := pacing
	opts.Port, opts.Identity, opts.Leader, opts.Term = port, bundle, "bench", term
	m := speakers.New(ctx, opts)
	defer func() {
		cancel()
		m.Wait()
	}()
	m.SetReady()
	for i := range heartbeatSpeakers {
		m.SetNode(benchNode(i), benchNodeAddr(i))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		connected := 0
		for i := range heartbeatSpeakers {
			if st, _ := m.State(benchNode(i)); st.Connected {
				connected++
			}
		}
		if connected == heartbeatSpeakers {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%d of %d speakers connected after 5m", connected, heartbeatSpeakers)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(time.Second) // let the connection burst settle
	hb0, r0 := m.Traffic()
	cpu0, start := rusageSelf(), time.Now()
	time.Sleep(heartbeatWindow)
	hb1, r1 := m.Traffic()
	cpu1, wall := rusageSelf(), time.Since(start)
	lost := 0
	for i := range heartbeatSpeakers {
		if st, _ := m.State(benchNode(i)); !st.Connected {
			lost++
		}
	}
	if lost > 0 {
		fmt.Fprintf(os.Stderr, "bench: heartbeat every %s × %d: %d speakers lost during the measurement\n", m.Heartbeat(), opts.Misses, lost)
	}
	return 100 * (cpu1 - cpu0).Seconds() / wall.Seconds(), float64(hb1-hb0+r1-r0) / wall.Seconds(), nil
}

// rusageSelf is this process's CPU time so far (user and system).
func rusageSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitQuiet waits up to 5 minutes for the 1-minute load to drop to 3 or
// less: the figures are this process's CPU on a shared machine.
func waitQuiet(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		load := loadAverage()
		if load <= 3 {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "bench: heartbeat: load %.2f still above 3 after 5m; measuring anyway\n", load)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func benchNode(i int) string { return fmt.Sprintf("bench-node-%03d", i) }

// benchNodeAddr is speaker i's loopback address, in 127.77.0.0/16.
func benchNodeAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 77, byte(i / 250), byte(i%250 + 1)})
}

// freePort is a port free on the speakers' first address.
func freePort() (int, error) {
	lis, err := net.Listen("tcp", netip.AddrPortFrom(benchNodeAddr(0), 0).String())
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port, nil
}

// benchSpeakerPod makes node's Node and speaker pod, which its token is
// bound to.
func benchSpeakerPod(ctx context.Context, cs *fake.Clientset, node string) error {
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: uuid.NewUUID()}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ironlb-speaker-" + node, Namespace: "kube-system", UID: uuid.NewUUID()},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: pki.DefaultSpeakerServiceAccount},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	_, err := cs.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{})
	return err
}

// startSpeakers starts the child process serving the speakers and waits
// until they listen.
func startSpeakers(ctx context.Context, spec string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), heartbeatChildEnv+"="+spec)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if _, err := cmd.StdinPipe(); err != nil { // closed when this process exits: the child then exits too
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the speakers: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "READY" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the speakers' process did not start: %q %v", line, err)
	}
	return cmd, nil
}

// noopAnnouncer answers for nothing.
type noopAnnouncer struct{}

func (noopAnnouncer) Announce(netip.Addr) error { return nil }
func (noopAnnouncer) Withdraw(netip.Addr) error { return nil }
func (noopAnnouncer) Err() error                { return nil }
func (noopAnnouncer) Close() error              { return nil }
func (noopAnnouncer) Probe(context.Context, []netip.Addr) (map[netip.Addr]speaker.Claim, error) {
	return nil, nil
}

// serveSpeakers is the child process: count real speaker.Agents, each on
// its loopback address and the port, until stdin closes.
func serveSpeakers(spec string) error {
	f := strings.Split(spec, ",")
	if len(f) != 4 {
		return fmt.Errorf("bad %s %q", heartbeatChildEnv, spec)
	}
	caFile := f[0]
	port, err1 := strconv.Atoi(f[2])
	count, err2 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ironlb-bench-speakers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for i := range count {
		node := benchNode(i)
		tokenFile := filepath.Join(dir, node)
		if err := os.WriteFile(tokenFile, []byte(heartbeatToken+node), 0o600); err != nil {
			return err
		}
		creds, err := pki.NewNodeCredentials(node, caFile, tokenFile)
		if err != nil {
			return err
		}
		agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) { return noopAnnouncer{}, nil }, logr.Discard(),
			speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
		lis, err := net.Listen("tcp", netip.AddrPortFrom(benchNodeAddr(i), uint16(port)).String())
		if err != nil {
			return err
		}
		srv := grpc.NewServer(guard.ServerOptions(creds.ServerTLSConfig(), nil)...) // as ironlb-speaker serves
		speakerv1.RegisterSpeakerServer(srv, agent)
		go func() { _ = srv.Serve(lis) }()
	}
	fmt.Println("READY")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the bench process goes
	return nil
}
