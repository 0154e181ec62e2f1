package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/standin"
)

// RequestStats counts the client's requests through the control-plane VIP.
type RequestStats struct {
	OK, Failed int
	// Refused counts the failures whose connection was refused: the
	// router sent it to a node whose apiserver no longer listened. The
	// other failures broke after connecting (reset, timed out): a
	// change of the router's ECMP next hops moves flows in flight
	// (Linux's hash-threshold re-hashes about half of them).
	Refused int
	// ByNode counts the answers by the node that gave them.
	ByNode map[string]int
	// Errors are the first failures.
	Errors []string
}

// Requests is a client sending HTTPS requests to the VIP's :6443, each on
// a new TCP connection, at a fixed interval (each in its own goroutine, so
// a slow one does not delay the next).
type Requests struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	st     RequestStats
}

// StartRequests starts the outside client's requests every interval.
func (r *CPBGP) StartRequests(interval time.Duration) *Requests {
	ctx, cancel := context.WithCancel(context.Background())
	q := &Requests{cancel: cancel, st: RequestStats{ByNode: map[string]int{}}}
	client := standin.Client(r.CA, r.Outside.DialContext, 2*time.Second)
	url := "https://" + netip.AddrPortFrom(ControlPlaneVIP, standin.Port).String() + "/version"
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			q.wg.Add(1)
			go func() {
				defer q.wg.Done()
				node, err := get(client, url)
				q.mu.Lock()
				defer q.mu.Unlock()
				if err != nil {
					q.st.Failed++
					if errors.Is(err, syscall.ECONNREFUSED) {
						q.st.Refused++
					}
					if len(q.st.Errors) < 10 {
						q.st.Errors = append(q.st.Errors, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					return
				}
				q.st.OK++
				q.st.ByNode[node]++
			}()
		}
	}()
	return q
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// Stop stops sending, waits for the requests in flight and returns the
// counts.
func (q *Requests) Stop() RequestStats {
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st
}

// MeasureUnready makes n's stand-in apiserver unready and returns how long
// until the router no longer routes the VIP via n; then makes it ready
// again and waits for its next hop to come back.
func (r *CPBGP) MeasureUnready(n *CPBGPNode) (time.Duration, error) {
	n.APIServer.SetReady(false)
	took, err := r.WaitNextHops(r.Hops(n.Name), 30*time.Second)
	n.APIServer.SetReady(true)
	if err != nil {
		return took, err
	}
	if _, err := r.WaitNextHops(r.Hops(), 30*time.Second); err != nil {
		return took, fmt.Errorf("%s ready again: %w", n.Name, err)
	}
	return took, nil
}

// MeasureNodeLoss cuts n's link and returns how long until the router no
// longer routes the VIP via n; then restores the link and waits for its
// next hop to come back.
func (r *CPBGP) MeasureNodeLoss(n *CPBGPNode) (time.Duration, error) {
	if err := n.Host.SetLink(false); err != nil {
		return 0, err
	}
	took, err := r.WaitNextHops(r.Hops(n.Name), 30*time.Second)
	if lerr := n.Host.SetLink(true); lerr != nil {
		return took, lerr
	}
	if err != nil {
		return took, err
	}
	if _, err := r.WaitNextHops(r.Hops(), 60*time.Second); err != nil {
		return took, fmt.Errorf("%s's link back: %w", n.Name, err)
	}
	return took, r.WaitBFDUp(30 * time.Second)
}

// WaitBFDUp waits until the router's BFD session with every node is up.
func (r *CPBGP) WaitBFDUp(timeout time.Duration) error {
	return Eventually(timeout, func() error {
		peers, err := r.Router.BFDPeers(context.Background())
		if err != nil {
			return err
		}
		for _, n := range r.Nodes {
			if p := peers[n.IP.String()]; p.Status != "up" {
				return fmt.Errorf("the router's BFD session with %s is %q", n.Name, p.Status)
			}
		}
		return nil
	})
}

// PlannedStop stops n's stand-in apiserver as kube-apiserver stops with
// --shutdown-delay-duration=delay while the outside client sends a request
// every interval through the VIP, from lead before the stop to lead after
// the stand-in closed; then starts the stand-in again and waits until the
// router routes via n again. It returns the client's counts.
func (r *CPBGP) PlannedStop(n *CPBGPNode, delay, interval, lead time.Duration) (RequestStats, error) {
	q := r.StartRequests(interval)
	time.Sleep(lead)
	n.APIServer.Shutdown(delay)
	<-n.APIServer.Closed()
	_, err := r.WaitNextHops(r.Hops(n.Name), 30*time.Second)
	time.Sleep(lead)
	st := q.Stop()
	if err != nil {
		return st, err
	}
	if err := r.RestartAPIServer(n); err != nil {
		return st, err
	}
	if _, err := r.WaitNextHops(r.Hops(), 30*time.Second); err != nil {
		return st, fmt.Errorf("%s's apiserver back: %w", n.Name, err)
	}
	return st, nil
}

// String is the counts in one line.
func (s RequestStats) String() string {
	out := fmt.Sprintf("%d ok, %d failed (%d refused), by node", s.OK, s.Failed, s.Refused)
	for _, n := range []string{"cp-a", "cp-b", "cp-c"} {
		out += " " + n + "=" + strconv.Itoa(s.ByNode[n])
	}
	return out
}
