package speaker

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// fuzzAddrs are the addresses instructions name: good ones, one the
// announcer fails, and ones the agent must refuse.
var fuzzAddrs = []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2", "192.0.2.66", "::ffff:192.0.2.9", "127.0.0.1"}

// fuzzFailing is announced with an error, always.
var fuzzFailing = netip.MustParseAddr("192.0.2.66")

// fuzzAgent is one agent for every input of a fuzzing process: each input
// opens a new stream, which takes the agent over with a snapshot.
var fuzzAgent struct {
	once sync.Once
	fa   *fakeAnnouncer
	c    speakerv1.SpeakerClient
	err  error
}

// startFuzzAgent starts the agent and its gRPC server on loopback, for the
// life of the process.
func startFuzzAgent() {
	fa := newFakeAnnouncer()
	fa.fail[fuzzFailing] = errors.New("injected failure")
	agent := NewAgent("node-a", "lo", fa.factory, logr.Discard(), WithLocalAddresses(noLocalAddresses))
	go agent.Run(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fuzzAgent.err = err
		return
	}
	srv := grpc.NewServer()
	speakerv1.RegisterSpeakerServer(srv, agent)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fuzzAgent.err = err
		return
	}
	fuzzAgent.fa, fuzzAgent.c = fa, speakerv1.NewSpeakerClient(conn)
}

// FuzzAgentInstructions: a stream of snapshots and updates (built from the
// input: which addresses each announces or withdraws, and versions that may
// be out of order) never makes the agent report a VIP set other than the one
// its responder answers for: every VIP reported ANNOUNCING is answered for,
// and nothing else is.
func FuzzAgentInstructions(f *testing.F) {
	f.Add([]byte{0x07, 0x13, 0x25, 0x80})
	f.Add([]byte{0xff, 0x01, 0x02, 0x03, 0x04})
	f.Add([]byte{0x00})
	f.Add([]byte{0x55, 0x33, 0xaa, 0x41, 0x90, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzAgent.once.Do(startFuzzAgent)
		if fuzzAgent.err != nil {
			t.Fatal(fuzzAgent.err)
		}
		if len(data) == 0 || len(data) > 64 {
			return
		}
		s, last := open(t, fuzzAgent.c)
		version := uint64(0)
		for i, b := range data {
			var in *speakerv1.Instruction
			set := pick(b, uint8(i))
			switch {
			case i == 0 || b&0xc0 == 0xc0:
				version++
				in = snapshot(version, set...)
			default:
				version++
				if b&0x20 != 0 && i%5 == 4 {
					version += 2 // out of order: refused, and the stream ends
				}
				if b&0x10 != 0 {
					in = update(version, nil, set...)
				} else {
					in = update(version, set)
				}
			}
			if err := s.Send(in); err != nil {
				return
			}
			r, err := settle(s, version)
			if err != nil {
				return // refused: the stream ended
			}
			last = r
			var announcing []string
			for _, v := range last.GetVips() {
				if v.GetState() == speakerv1.VIPStatus_ANNOUNCING {
					announcing = append(announcing, v.GetAddress())
				}
			}
			slices.Sort(announcing)
			if diff := cmp.Diff(announcing, fuzzAgent.fa.list()); diff != "" {
				t.Fatalf("after instruction %d (%v): reported ANNOUNCING (-) vs answered for (+):\n%s", i, in, diff)
			}
		}
		_ = s.CloseSend()
	})
}

// pick is the addresses byte b (at position i) names.
func pick(b, i uint8) []string {
	var out []string
	for j, a := range fuzzAddrs {
		if (b^i)>>(j%8)&1 == 1 {
			out = append(out, a)
		}
	}
	return out
}

// settle reads up to the answer to the instruction of version v (the
// first full report that applied it): the agent's state after it.
// Heartbeats are answered at once, even while an instruction is applied,
// so they cannot tell when it is done.
func settle(s speakerv1.Speaker_SyncClient, v uint64) (*speakerv1.Report, error) {
	for {
		r, err := s.Recv()
		if err != nil {
			return nil, err
		}
		if r.GetFull() && r.GetAppliedVersion() == v {
			return r, nil
		}
	}
}
