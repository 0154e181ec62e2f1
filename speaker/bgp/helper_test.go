package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/ironlb/ironlb/test/netrig"
)

// The gobgp tests run the Router in a node's network namespace: a helper
// process (this test binary, re-run with helperEnv set under
// "ip netns exec") reads desired states as JSON lines on stdin, applies
// each with a Reconciler over GoBGP and answers one JSON line per request.

const helperEnv = "IRONLB_BGP_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// wireExport is one entry of Desired.Exports on the wire.
type wireExport struct {
	Peer   netip.Addr
	Prefix netip.Prefix
	Attrs  Attributes
}

// request is one line to the helper: a state to apply, or (Sessions) a
// question.
type request struct {
	Desired  *Desired `json:",omitempty"`
	Exports  []wireExport
	Sessions bool
}

// reply is the helper's answer.
type reply struct {
	Error    string
	Sessions []Session
}

func runHelper(in io.Reader, out io.Writer) int {
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 2})
	g := NewGoBGP(log)
	rc := NewReconciler(g)
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	ctx := context.Background()
	for sc.Scan() {
		var req request
		var rep reply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep.Error = err.Error()
		} else if req.Sessions {
			s, err := g.Sessions(ctx)
			rep.Sessions = s
			if err != nil {
				rep.Error = err.Error()
			}
		} else if req.Desired != nil {
			d := *req.Desired
			d.Exports = map[Export]Attributes{}
			for _, e := range req.Exports {
				d.Exports[Export{Peer: e.Peer, Prefix: e.Prefix}] = e.Attrs
			}
			if err := rc.Apply(ctx, d); err != nil {
				rep.Error = err.Error()
			}
		}
		if err := enc.Encode(rep); err != nil {
			return 1
		}
	}
	// stdin closed: stop without notifying (as a crash would).
	return 0
}

// helper is a running helper process.
type helper struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startHelper(t *testing.T, h *netrig.Host) *helper {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = &testLog{t: t, prefix: h.Role + ": "}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(cmd); err != nil {
		t.Fatal(err)
	}
	hp := &helper{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	hp.out.Buffer(make([]byte, 1<<20), 1<<24)
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return hp
}

func (hp *helper) do(req request) reply {
	hp.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		hp.t.Fatal(err)
	}
	if _, err := hp.in.Write(append(b, '\n')); err != nil {
		hp.t.Fatalf("helper: %v", err)
	}
	if !hp.out.Scan() {
		hp.t.Fatalf("helper ended: %v", hp.out.Err())
	}
	var rep reply
	if err := json.Unmarshal(hp.out.Bytes(), &rep); err != nil {
		hp.t.Fatal(err)
	}
	return rep
}

// apply makes the helper apply d and fails the test on an error.
func (hp *helper) apply(d Desired) {
	hp.t.Helper()
	req := request{Desired: &d}
	for e, a := range d.Exports {
		req.Exports = append(req.Exports, wireExport{Peer: e.Peer, Prefix: e.Prefix, Attrs: a})
	}
	req.Desired.Exports = nil
	if rep := hp.do(req); rep.Error != "" {
		hp.t.Fatalf("apply: %s", rep.Error)
	}
}

func (hp *helper) sessions() []Session {
	hp.t.Helper()
	rep := hp.do(request{Sessions: true})
	if rep.Error != "" {
		hp.t.Fatalf("sessions: %s", rep.Error)
	}
	return rep.Sessions
}

// testLog writes a helper's stderr to the test log, line by line.
type testLog struct {
	t      *testing.T
	prefix string
	buf    strings.Builder
}

func (l *testLog) Write(p []byte) (int, error) {
	l.buf.Write(p)
	for {
		s := l.buf.String()
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log(l.prefix + s[:i])
		l.buf.Reset()
		l.buf.WriteString(s[i+1:])
	}
}

// eventually retries check until it succeeds or timeout passes.
func eventually(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
