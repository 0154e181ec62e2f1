package cluster_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/test/cluster"
)

// speakerSelector selects the speaker pods deploy/ runs.
const speakerSelector = "app.kubernetes.io/name=ironlb-speaker"

// testRolloutRestart is issue 21's item 6 on the real cluster: `kubectl
// rollout restart daemonset/ironlb-speaker` (RollingUpdate, maxUnavailable
// 1: every node's speaker pod is deleted, SIGTERM, and a new one started,
// one node at a time) while the outside client opens a new connection to
// the layer-2 Service svc's vip every 10 ms and holds 12 long-lived ones.
// No connection fails and the VIP's Announced record never leaves its
// node: a restarting speaker keeps its VIPs.
func testRolloutRestart(t *testing.T, ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, svc string, vip netip.Addr) {
	owner := waitAnnounced(t, ctx, cs, svc, vip, "", time.Minute)
	oldPods := speakerPods(t, ctx, cs)

	// The record, every 100 ms in the background: each change is kept.
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	var changes []string
	var watchErrs int
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		last := []string{owner}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			on, err := announcedNodes(watchCtx, cs, svc, vip)
			if err != nil && watchCtx.Err() == nil {
				watchErrs++
			}
			if err == nil && !slices.Equal(on, last) {
				changes = append(changes, fmt.Sprintf("%s: %v → %v", time.Now().Format("15:04:05.000"), last, on))
				last = on
			}
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopWatch(); watchWG.Wait() }()

	cl := startHTTPClient(c, netip.AddrPortFrom(vip, 80), 10*time.Millisecond, 12, 50*time.Millisecond, time.Second)
	defer cl.stop()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err := cl.ready(rctx)
	cancel()
	if err != nil {
		t.Fatalf("the client's connections to %s: %v", vip, err)
	}

	start := time.Now()
	if _, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "rollout", "restart", "daemonset/ironlb-speaker"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "rollout", "status", "daemonset/ironlb-speaker", "--timeout=5m"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Every pod replaced, and every new speaker taken over by the CCM (the
	// last one's VIPs are still the restarting node's until then).
	var newPods map[types.UID]string
	err = eventually(ctx, time.Minute, func() error {
		newPods = speakerPods(t, ctx, cs)
		if len(newPods) != len(oldPods) {
			return fmt.Errorf("%d speaker pods, want %d", len(newPods), len(oldPods))
		}
		for uid, name := range newPods {
			if _, ok := oldPods[uid]; ok {
				return fmt.Errorf("speaker pod %s (%s) was not replaced", name, uid)
			}
			logs, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "logs", name)
			if err != nil {
				return err
			}
			if !strings.Contains(logs, "CCM took over the speaker") {
				return fmt.Errorf("the CCM has not taken over %s yet", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	taken := time.Since(start)
	// Connections in flight through the last restart settle.
	time.Sleep(500 * time.Millisecond)
	res := cl.stop()
	stopWatch()
	watchWG.Wait()

	t.Logf("rollout restart of %d speakers: rollout status done after %s, every new speaker taken over by the CCM after %s",
		len(newPods), took.Round(time.Millisecond), taken.Round(time.Millisecond))
	t.Logf("client to %s (on %s): %d of %d new connections failed; %d of %d long-lived connections broke (%d requests on them); the Announced record changed %d times (%d failed reads)",
		vip, owner, len(res.failures), res.attempts, len(res.breaks), res.holders, res.held, len(changes), watchErrs)
	logCCM(t, ctx, c, "Speaker restarting", "Restarted speaker", "Restarting speaker", "Speaker lost")
	for i, f := range res.failures {
		if i == 10 {
			t.Logf("... %d more failures", len(res.failures)-i)
			break
		}
		t.Logf("failed new connection at +%s: %s", f.at.Sub(start).Round(time.Millisecond), f.err)
	}
	for _, b := range res.breaks {
		t.Logf("broken long-lived connection at +%s: %s", b.at.Sub(start).Round(time.Millisecond), b.err)
	}
	if len(res.failures) > 0 || len(res.breaks) > 0 {
		t.Errorf("%d new connections failed and %d long-lived connections broke during the rollout; want none", len(res.failures), len(res.breaks))
	}
	if len(changes) > 0 {
		t.Errorf("%s's Announced record changed during the rollout (it was on %s): %s", vip, owner, strings.Join(changes, "; "))
	}
	if t.Failed() {
		for _, n := range c.Nodes {
			logSpeaker(t, ctx, c, n.Spec.Name, "")
		}
	}
}

// speakerPods returns the speaker pods that are not being deleted, by UID.
func speakerPods(t *testing.T, ctx context.Context, cs kubernetes.Interface) map[types.UID]string {
	t.Helper()
	pods, err := cs.CoreV1().Pods("ironlb-system").List(ctx, metav1.ListOptions{LabelSelector: speakerSelector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[types.UID]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.UID] = p.Name
		}
	}
	return out
}

// announcedNodes is announcedOn that returns its error (for a goroutine).
func announcedNodes(ctx context.Context, cs kubernetes.Interface, name string, vip netip.Addr) ([]string, error) {
	svc, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	cond := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced")
	if cond == nil {
		return nil, nil
	}
	var own []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			own = append(own, a)
		}
	}
	entries, err := announced.Decode(cond.Message, own)
	if err != nil {
		return nil, fmt.Errorf("%s's Announced record %q: %w", name, cond.Message, err)
	}
	for _, e := range entries {
		if e.Address == vip {
			return e.Layer2, nil
		}
	}
	return nil, nil
}

// logCCM logs the lines of the CCM's log that contain one of substrs.
func logCCM(t *testing.T, ctx context.Context, c *cluster.Cluster, substrs ...string) {
	t.Helper()
	logs, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "logs", "-l", "app.kubernetes.io/name=ironlb-ccm", "--tail=500")
	if err != nil {
		t.Logf("the CCM's log: %v", err)
		return
	}
	for _, l := range strings.Split(logs, "\n") {
		if slices.ContainsFunc(substrs, func(s string) bool { return strings.Contains(l, s) }) {
			t.Logf("ccm: %s", l)
		}
	}
}

// clientEvent is a failed new connection or a broken long-lived one.
type clientEvent struct {
	at  time.Time
	err error
}

// clientResult is what httpClient saw.
type clientResult struct {
	attempts int           // new connections tried
	failures []clientEvent // of those, the failed ones
	holders  int           // long-lived connections opened
	held     int           // requests answered on them
	breaks   []clientEvent // long-lived connections that failed
}

// httpClient is the outside client of a web Service (agnhost netexec):
// from the client's namespace it opens a new connection every interval
// (GET /hostname, Connection: close, within timeout) and holds long-lived
// keep-alive connections, each asking GET /hostname every holdEvery and
// expecting the answer within timeout. A long-lived connection that fails
// is not reopened. Stopping fails nothing.
type httpClient struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	readyCh chan error // one value per long-lived connection: nil once it got its first answer

	once sync.Once
	mu   sync.Mutex
	res  clientResult
}

func startHTTPClient(c *cluster.Cluster, target netip.AddrPort, interval time.Duration, holders int, holdEvery, timeout time.Duration) *httpClient {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &httpClient{cancel: cancel, readyCh: make(chan error, holders)}
	for i := range holders {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			cl.hold(ctx, c, i, target, holdEvery, timeout)
		}()
	}
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			cl.wg.Add(1)
			go func(at time.Time) {
				defer cl.wg.Done()
				err := oneRequest(ctx, c, target, timeout)
				if ctx.Err() != nil && err != nil {
					return // cut short by stop
				}
				cl.mu.Lock()
				defer cl.mu.Unlock()
				cl.res.attempts++
				if err != nil {
					cl.res.failures = append(cl.res.failures, clientEvent{at, err})
				}
			}(time.Now())
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return cl
}

// oneRequest asks GET /hostname on a new connection.
func oneRequest(ctx context.Context, c *cluster.Cluster, target netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	return ask(conn, bufio.NewReader(conn), target, dl, true)
}

// ask sends GET /hostname on conn and checks the answer is a web pod's
// name.
func ask(conn io.ReadWriter, r *bufio.Reader, target netip.AddrPort, deadline time.Time, close bool) error {
	if dc, ok := conn.(interface{ SetDeadline(time.Time) error }); ok {
		_ = dc.SetDeadline(deadline)
	}
	hdr := ""
	if close {
		hdr = "Connection: close\r\n"
	}
	if _, err := fmt.Fprintf(conn, "GET /hostname HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, hdr); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "web-") {
		return fmt.Errorf("answer %s %q", resp.Status, body)
	}
	return nil
}

// hold runs long-lived connection i until it fails or ctx is done.
func (cl *httpClient) hold(ctx context.Context, c *cluster.Cluster, i int, target netip.AddrPort, every, timeout time.Duration) {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	conn, err := c.DialContext(dctx, "tcp", target.String())
	cancel()
	if err != nil {
		cl.readyCh <- fmt.Errorf("long-lived connection %d: %w", i, err)
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cl.mu.Lock()
	cl.res.holders++
	cl.mu.Unlock()
	r := bufio.NewReader(conn)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		err := ask(conn, r, target, time.Now().Add(timeout), false)
		if ctx.Err() != nil {
			return // stopped, not broken
		}
		if err != nil {
			err = fmt.Errorf("long-lived connection %d (%s) after %d answers: %w", i, conn.LocalAddr(), n, err)
			cl.mu.Lock()
			cl.res.breaks = append(cl.res.breaks, clientEvent{time.Now(), err})
			cl.mu.Unlock()
			if n == 0 {
				cl.readyCh <- err
			}
			return
		}
		cl.mu.Lock()
		cl.res.held++
		cl.mu.Unlock()
		if n == 0 {
			cl.readyCh <- nil
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ready waits until every long-lived connection got its first answer.
func (cl *httpClient) ready(ctx context.Context) error {
	for i := 0; i < cap(cl.readyCh); i++ {
		select {
		case err := <-cl.readyCh:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("%d of %d long-lived connections ready: %w", i, cap(cl.readyCh), ctx.Err())
		}
	}
	return nil
}

// stop ends the client, waits for its connections and returns what it saw.
// It may be called more than once.
func (cl *httpClient) stop() clientResult {
	cl.once.Do(func() {
		cl.cancel()
		cl.wg.Wait()
	})
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.res
}
