package simspeakers

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/guard"
)

// simInterface is the name of every simulated speaker's one interface.
const simInterface = "sim0"

// Speaker is one simulated node's speaker: the real speaker.Agent with a
// Recorder for layer 2 and a BGP fake, the real node credentials, and a
// gRPC server with the real speaker's options, listening on the node's
// address.
type Speaker struct {
	Node     string
	Addr     netip.Addr
	Recorder *Recorder
	BGP      *BGP

	agent  *speaker.Agent
	srv    *grpc.Server
	cancel context.CancelFunc

	mu         sync.Mutex
	received   map[string]int // instructions by kind
	lastAt     time.Time      // when the last instruction other than a heartbeat arrived
	arrivals   *arrivals
	snapshots  []SnapshotArrival
	killed     bool
	runStopped chan struct{}
}

// maintainEvery is the simulated agents' Run pass interval.
const maintainEvery = 5 * time.Second

// startSpeaker starts node's speaker: its agent, and a gRPC server on
// lis. caFile and tokenFile are what its pod would have mounted.
func startSpeaker(node string, addr netip.Addr, index int, caFile, tokenFile string, lis net.Listener, log logr.Logger) (*Speaker, error) {
	creds, err := pki.NewNodeCredentials(node, caFile, tokenFile)
	if err != nil {
		return nil, fmt.Errorf("credentials of %s: %w", node, err)
	}
	s := &Speaker{Node: node, Addr: addr, Recorder: NewRecorder(), BGP: NewBGP(), received: map[string]int{}, arrivals: newArrivals(), runStopped: make(chan struct{})}
	ifi := &net.Interface{
		// An index no real interface has: its Addrs are empty.
		Index: 1<<24 + index, MTU: 1500, Name: simInterface, Flags: net.FlagUp | net.FlagBroadcast | net.FlagMulticast,
		HardwareAddr: net.HardwareAddr{0x02, 0x51, byte(index >> 24), byte(index >> 16), byte(index >> 8), byte(index)},
	}
	open := func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) { return s.Recorder, nil }
	s.agent = speaker.NewAgent(node, simInterface, open, log,
		speaker.WithBGP(s.BGP), speaker.WithCredentials(creds),
		// A thousand agents share one host: a pass each per 500 ms (the
		// interfaces listed, BGP polled) would load the machine more
		// than the CCM under test. Their interfaces never change.
		speaker.WithMaintainInterval(maintainEvery),
		speaker.WithInterfaceLookup(func(name string) (*net.Interface, error) {
			if name != simInterface {
				return nil, fmt.Errorf("route ip+net: no such network interface %q", name)
			}
			return ifi, nil
		}),
		speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) {
			return map[netip.Addr]string{addr: simInterface}, nil
		}))
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.runStopped)
		s.agent.Run(ctx)
	}()
	s.srv = grpc.NewServer(append(guard.ServerOptions(creds.ServerTLSConfig(), nil), grpc.StreamInterceptor(s.count))...)
	speakerv1.RegisterSpeakerServer(s.srv, s.agent)
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// count is a stream interceptor that counts the instructions the stream
// receives, by kind, notes when the last one that is not a heartbeat
// arrived, and records per address when the latest instruction about it
// arrived.
func (s *Speaker) count(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &countingStream{ServerStream: ss, s: s})
}

type countingStream struct {
	grpc.ServerStream
	s *Speaker
}

func (c *countingStream) RecvMsg(m any) error {
	err := c.ServerStream.RecvMsg(m)
	if err != nil {
		return err
	}
	if in, ok := m.(*speakerv1.Instruction); ok {
		kind := instructionKind(in)
		now := time.Now()
		if kind == "snapshot" || kind == "update" {
			c.s.arrivals.record(in, now)
		}
		c.s.mu.Lock()
		if snap := in.GetSnapshot(); snap != nil {
			c.s.snapshots = append(c.s.snapshots, SnapshotArrival{Leader: snap.GetLeader(), Term: snap.GetTerm(), At: now})
		}
		c.s.received[kind]++
		if kind != "heartbeat" {
			c.s.lastAt = now
		}
		c.s.mu.Unlock()
	}
	return nil
}

// instructionKind names in's kind as the speaker's metrics do.
func instructionKind(in *speakerv1.Instruction) string {
	switch in.GetKind().(type) {
	case *speakerv1.Instruction_Snapshot:
		return "snapshot"
	case *speakerv1.Instruction_Update:
		return "update"
	case *speakerv1.Instruction_Heartbeat:
		return "heartbeat"
	case *speakerv1.Instruction_Certificate:
		return "certificate"
	case *speakerv1.Instruction_Attest:
		return "attest"
	}
	return "unknown"
}

// Received returns the instructions received so far, by kind (snapshot,
// update, heartbeat, certificate, attest).
func (s *Speaker) Received() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.received))
	for k, v := range s.received {
		out[k] = v
	}
	return out
}

// LastInstruction is when the last instruction other than a heartbeat
// arrived; zero before any.
func (s *Speaker) LastInstruction() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAt
}

// SnapshotArrival is when a snapshot reached a speaker, and from which
// leader and term.
type SnapshotArrival struct {
	Leader string
	Term   uint64
	At     time.Time
}

// Snapshots returns every snapshot the speaker received, in order of
// arrival (one per stream the CCM opened: a handful).
func (s *Speaker) Snapshots() []SnapshotArrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.snapshots)
}

// Arrival returns when the latest instruction that announced or withdrew
// address (its text form, as the instructions carry it) arrived; false if
// none did.
func (s *Speaker) Arrival(address string) (Arrival, bool) { return s.arrivals.get(address) }

// Arrivals returns the latest Arrival of every address the speaker was
// told about.
func (s *Speaker) Arrivals() map[string]Arrival { return s.arrivals.all() }

// Agent returns the speaker's agent (for its reports and addresses).
func (s *Speaker) Agent() *speaker.Agent { return s.agent }

// Kill stops the speaker as if its process died: the server closes every
// connection at once and the agent stops, withdrawing nothing and telling
// the CCM nothing. What it announced stays recorded (a dead process
// answers no ARP, but the record shows what it held).
func (s *Speaker) Kill() {
	s.mu.Lock()
	if s.killed {
		s.mu.Unlock()
		return
	}
	s.killed = true
	s.mu.Unlock()
	s.srv.Stop()
	s.cancel()
	<-s.runStopped
}

// Killed reports whether Kill was called.
func (s *Speaker) Killed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killed
}
