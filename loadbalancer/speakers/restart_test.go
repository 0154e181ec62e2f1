package speakers

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
)

// restartSpeaker is a speaker with the "restart" capability served on
// its own listener: it enrolls as a real speaker does, reports, answers
// heartbeats, and ends its streams with ReasonRestarting once stopping
// is closed.
type restartSpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent    *speaker.Agent // enrolls
	creds    *pki.NodeCredentials
	node     string
	caps     []string
	stopping chan struct{}
}

func (s *restartSpeaker) Sync(stream speakerv1.Speaker_SyncServer) error {
	if ok, _ := s.creds.Enrolled(); !ok {
		return s.agent.Sync(stream)
	}
	heartbeats := make(chan uint64, 64)
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				return
			}
			if hb := in.GetHeartbeat(); hb != nil {
				select {
				case heartbeats <- hb.GetSeq():
				default:
				}
			}
		}
	}()
	full := &speakerv1.Report{Node: s.node, Full: true, Capabilities: s.caps, Interfaces: []*speakerv1.InterfaceStatus{{Name: "eth0", Up: true, Default: true}}}
	if err := stream.Send(full); err != nil {
		return err
	}
	for {
		select {
		case <-s.stopping:
			return speakerv1.StreamError(codes.Unavailable, speakerv1.ReasonRestarting, "speaker restarting")
		case <-stream.Context().Done():
			return nil
		case seq := <-heartbeats:
			if err := stream.Send(&speakerv1.Report{Node: s.node, HeartbeatSeq: seq, Capabilities: s.caps}); err != nil {
				return err
			}
		}
	}
}

// serveRestart serves a new restartSpeaker process of node on addr
// ("127.0.0.1:0" for a new port); it returns the speaker, its server and
// the address it listens on.
func serveRestart(t *testing.T, node, addr string, creds *pki.NodeCredentials, caps []string) (*restartSpeaker, *grpc.Server, net.Listener) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	sp := &restartSpeaker{agent: agent, creds: creds, node: node, caps: caps, stopping: make(chan struct{})}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, sp)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sp, srv, lis
}

// dialMode is how the test's dialer reaches the speaker's port.
type dialMode int32

const (
	dialDirect  dialMode = iota // a real dial to the listener
	dialSilence                 // no answer: waits until the dial's deadline
)

// TestRestartingSpeaker: a speaker with the "restart" capability ends its
// stream with ReasonRestarting. The CCM holds it restarting (not stopped,
// not connected) while dials to its port are refused, and until a new
// process's stream reports; a dial that gets no answer, or the restart
// grace running out, ends it at once.
func TestRestartingSpeaker(t *testing.T) {
	restartCaps := []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing, speakerv1.CapabilityRestart}
	for _, tc := range []struct {
		name  string
		caps  []string
		grace time.Duration
		// after the stream ended: the host is silent rather than
		// refusing.
		silent bool
		// wantRestarting: the CCM holds it restarting at first.
		wantRestarting bool
		// then: "back" (a new process takes the port), "gone" (Restarting
		// ends without a stream) or "" (never restarting).
		then string
	}{
		{name: "refused until a new process takes the port", caps: restartCaps, grace: time.Minute, wantRestarting: true, then: "back"},
		{name: "no answer within the loss limit: host gone", caps: restartCaps, grace: time.Minute, silent: true, wantRestarting: true, then: "gone"},
		{name: "restart grace runs out", caps: restartCaps, grace: 500 * time.Millisecond, wantRestarting: true, then: "gone"},
		{name: "a speaker without the capability is not restarting", caps: restartCaps[:2], grace: time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const node = "node-restart"
			e := newEnv(t)
			creds := e.credentials(node, node)
			sp, srv, lis := serveRestart(t, node, "127.0.0.1:0", creds, tc.caps)
			port := lis.Addr().String()
			var mode atomic.Int32
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := New(ctx, Options{
				Heartbeat: 50 * time.Millisecond, Misses: 5, Identity: e.bundle, Leader: "test", RestartGrace: tc.grace,
				Dial: func(ctx context.Context, _ string) (net.Conn, error) {
					if dialMode(mode.Load()) == dialSilence {
						<-ctx.Done()
						return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
					}
					var d net.Dialer
					return d.DialContext(ctx, "tcp", port)
				},
			})
			m.SetReady()
			changes := make(chan struct{}, 1)
			m.OnChange(func(string) {
				select {
				case changes <- struct{}{}:
				default:
				}
			})
			// waitChange waits for OnChange calls until cond holds.
			waitChange := func(what string, cond func(State) bool) State {
				t.Helper()
				deadline := time.After(20 * time.Second)
				for {
					if st, _ := m.State(node); cond(st) {
						return st
					}
					select {
					case <-changes:
					case <-deadline:
						st, _ := m.State(node)
						t.Fatalf("no %s: state %+v", what, st)
					}
				}
			}
			m.SetNode(node, nodeAddr(node))
			waitChange("connection", func(st State) bool { return st.Connected && st.Has(speakerv1.CapabilityRestart) == (len(tc.caps) == 3) })

			// The process stops: its listener first (dials are refused),
			// then it ends its stream.
			lis.Close()
			if tc.silent {
				mode.Store(int32(dialSilence))
			}
			close(sp.stopping)
			st := waitChange("end of the stream", func(st State) bool { return !st.Connected })
			if st.Restarting != tc.wantRestarting || st.Stopped {
				t.Fatalf("after the stream ended: Restarting %t, Stopped %t; want Restarting %t, not Stopped", st.Restarting, st.Stopped, tc.wantRestarting)
			}
			switch tc.then {
			case "back":
				probes := restartProbes.Load()
				waitFor(t, "dials refused", 10*time.Second, func() bool { return restartProbes.Load() >= probes+3 })
				if st, _ := m.State(node); !st.Restarting || st.Connected {
					t.Fatalf("while dials are refused: Restarting %t, Connected %t; want restarting, not connected", st.Restarting, st.Connected)
				}
				srv.Stop()
				serveRestart(t, node, port, creds, tc.caps)
				waitChange("reconnection", func(st State) bool { return st.Connected && !st.Restarting })
			case "gone":
				start := time.Now()
				st := waitChange("end of the restart", func(st State) bool { return !st.Restarting })
				t.Logf("restart ended after %s: %s", time.Since(start).Round(time.Millisecond), st.Problem)
				if st.Connected {
					t.Error("connected, want the speaker down")
				}
			}
		})
	}
}

// TestClassifyDial: what a failed dial says of a restarting speaker's
// host, by the error's type.
func TestClassifyDial(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want dialOutcome
	}{
		{"refused: host up", op(syscall.ECONNREFUSED), dialRefused},
		{"no route to host", op(syscall.EHOSTUNREACH), dialGone},
		{"network unreachable", op(syscall.ENETUNREACH), dialGone},
		{"deadline", &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}, dialGone},
		{"timeout", timeoutErr{}, dialGone},
		{"other", op(syscall.EPERM), dialUnknown},
		{"closed", io.ErrClosedPipe, dialUnknown},
		{"wrapped refused", errors.Join(errors.New("x"), op(syscall.ECONNREFUSED)), dialRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classifyDial(tc.err); got != tc.want {
				t.Errorf("classifyDial(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
