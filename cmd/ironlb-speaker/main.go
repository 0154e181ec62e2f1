// Command ironlb-speaker is IronLB's node agent. It announces the virtual IPs
// the CCM assigns to its node. It holds no Kubernetes credentials: the CCM
// leader dials it over mutually authenticated gRPC.
//
// "ironlb-speaker control-plane [flags]" serves the kube-apiserver's own VIP
// instead (controlplane.go, package cpvip), as a static pod on every
// control-plane node.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"k8s.io/component-base/cli/flag"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/internal/version"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/bgp"
	"github.com/ironlb/ironlb/speaker/dhcp"
	"github.com/ironlb/ironlb/speaker/guard"
)

// DefaultHealthPort serves /healthz, /readyz and /metrics (and, with
// --debug-endpoints, /announcements and /bgp); the speaker listens for the
// CCM on speakerv1.DefaultPort.
const DefaultHealthPort = 7474

type options struct {
	node, nodeIP, ifc, listen, health string
	caFile, tokenFile                 string
	kubeProxyHealthz                  string
	port, healthPort                  int
	allowedCIDRs, ccmCIDRs            []string
	debugEndpoints, showVersion       bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == controlPlaneCommand {
		os.Exit(controlPlaneMain(os.Args[2:]))
	}
	var o options
	fs := pflag.NewFlagSet("ironlb-speaker", pflag.ContinueOnError)
	fs.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&o.nodeIP, "node-ip", os.Getenv("NODE_IP"), "this node's IP; VIPs are announced on the interface holding it (default $NODE_IP)")
	fs.StringVar(&o.ifc, "interface", "", "announce on this interface instead of the one holding --node-ip")
	fs.StringVar(&o.listen, "listen", "", "address for the CCM's gRPC connections (default: --node-ip and --port; not every address of the node)")
	fs.IntVar(&o.port, "port", speakerv1.DefaultPort, "port for the CCM's gRPC connections, on --node-ip")
	fs.StringVar(&o.caFile, "ca-file", "/etc/ironlb/ca/ca.crt", "CAs that sign the CCM's certificate (ca.crt of the ironlb-ca-bundle ConfigMap)")
	fs.StringVar(&o.tokenFile, "token-file", "/var/run/secrets/ironlb.dev/token", "projected ServiceAccount token with the audience "+pki.SpeakerAudience+": the CCM exchanges it for this node's certificate")
	fs.StringVar(&o.health, "health-address", "", `address for /healthz, /readyz and /metrics over plain HTTP (default: --node-ip and --health-port); "off" turns it off`)
	fs.IntVar(&o.healthPort, "health-port", DefaultHealthPort, "port of the plain-HTTP endpoints, on --node-ip")
	fs.BoolVar(&o.debugEndpoints, "debug-endpoints", false, "also serve /announcements (the VIPs this node announces) and /bgp (BGP sessions, routes per peer, last errors) on the plain-HTTP port; anyone who reaches it reads them, so leave off except while debugging")
	fs.StringSliceVar(&o.allowedCIDRs, "allowed-cidrs", nil, "announce and advertise only addresses inside these CIDRs, whatever a CCM says (defence in depth; default: no limit)")
	fs.StringSliceVar(&o.ccmCIDRs, "ccm-cidrs", nil, "addresses the CCM connects from (the control-plane nodes'): their connections have handshake slots no other source can take (default: none; the sources of CCMs that connected are remembered)")
	fs.StringVar(&o.kubeProxyHealthz, "kube-proxy-healthz-url", speaker.DefaultKubeProxyHealthzURL, `kube-proxy's health check: once it has answered healthy, the CCM moves this node's VIPs elsewhere while it does not (the node cannot deliver their traffic); "" turns the check off`)
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	logCfg := logsapi.NewLoggingConfiguration()
	gate := featuregate.NewFeatureGate()
	if err := logsapi.AddFeatureGates(gate); err != nil {
		panic(err)
	}
	logsapi.AddFlags(logCfg, fs)
	fs.SetNormalizeFunc(flag.WordSepNormalizeFunc)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "ironlb-speaker:", err)
		os.Exit(2)
	}
	if o.showVersion {
		fmt.Println("ironlb-speaker", version.Version)
		return
	}
	if err := logsapi.ValidateAndApply(logCfg, gate); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-speaker:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		signal.Stop(sigs)
		if sig == syscall.SIGTERM {
			cancel(errTerminated)
		} else {
			cancel(errInterrupted)
		}
	}()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "Speaker failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}

// The causes of ctx's end in run: SIGTERM (the kubelet stops the pod: a
// rolling restart, most often) or SIGINT (stopped by hand).
var (
	errTerminated  = errors.New("SIGTERM")
	errInterrupted = errors.New("SIGINT")
)

func run(ctx context.Context, o options) error {
	log := klog.Background().WithValues("node", o.node)
	if o.node == "" {
		return errors.New("--node-name (or $NODE_NAME) is required")
	}
	ifc := o.ifc
	if ifc == "" {
		if o.nodeIP == "" {
			return errors.New("--node-ip (or $NODE_IP) or --interface is required")
		}
		ip, err := netip.ParseAddr(o.nodeIP)
		if err != nil {
			return fmt.Errorf("--node-ip: %w", err)
		}
		if ifc, err = speaker.InterfaceFor(ip); err != nil {
			return err
		}
	}
	listen, health, err := addresses(o)
	if err != nil {
		return err
	}
	allowed, err := speaker.ParsePrefixes(o.allowedCIDRs)
	if err != nil {
		return fmt.Errorf("--allowed-cidrs: %w", err)
	}
	ccm, err := speaker.ParsePrefixes(o.ccmCIDRs)
	if err != nil {
		return fmt.Errorf("--ccm-cidrs: %w", err)
	}
	creds, err := pki.NewNodeCredentials(o.node, o.caFile, o.tokenFile)
	if err != nil {
		return fmt.Errorf("preparing TLS: %w", err)
	}
	agentOpts := []speaker.Option{speaker.WithBGP(bgp.NewSpeaker(log.WithName("bgp"))), speaker.WithAllowedPrefixes(allowed), speaker.WithCredentials(creds),
		speaker.WithDHCP(openDHCP)}
	var dataPlane *speaker.DataPlaneHealth
	if o.kubeProxyHealthz != "" {
		dataPlane = speaker.NewDataPlaneHealth(o.kubeProxyHealthz, log.WithName("data-plane"))
		agentOpts = append(agentOpts, speaker.WithDataPlane(dataPlane))
	} else {
		log.Info("kube-proxy health check off (--kube-proxy-healthz-url=\"\"): the node's data plane is not checked")
	}
	agent := speaker.NewAgent(o.node, ifc, layer2Factory(log), log, agentOpts...)

	go agent.Run(ctx)
	if dataPlane != nil {
		go dataPlane.Run(ctx)
	}

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening for the CCM: %w", err)
	}
	srv := grpc.NewServer(guard.ServerOptions(creds.ServerTLSConfig(), ccm)...)
	speakerv1.RegisterSpeakerServer(srv, agent)
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(lis) }()

	var hs *http.Server
	if health != "" {
		var opts []speaker.HTTPOption
		if o.debugEndpoints {
			opts = append(opts, speaker.WithDebugEndpoints())
		}
		hs = healthServer(health, agent.HTTPHandler(opts...))
		go func() {
			if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("health endpoint: %w", err)
			}
		}()
	}
	log.Info("Speaker started", "version", version.Version, "listen", lis.Addr().String(), "health", health, "debugEndpoints", o.debugEndpoints, "interface", ifc, "allowedCIDRs", allowed, "ccmCIDRs", ccm)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	if errors.Is(context.Cause(ctx), errTerminated) {
		// A planned stop (a rolling restart, most often): withdraw
		// nothing; the CCM keeps the VIPs here while the node is up and
		// the new process takes over. Layer 2 stops answering as the
		// process exits; BGP sessions close without a notification.
		log.Info("SIGTERM: restarting; ending the CCM streams, withdrawing nothing")
		agent.Restart()
	} else {
		// Withdraw first: once the process is gone nobody answers
		// anyway, and the CCM sees the stream end and moves the VIPs.
		log.Info("Shutting down: withdrawing every VIP", "cause", context.Cause(ctx))
		if cerr := agent.Close(); cerr != nil {
			log.Error(cerr, "Withdrawing")
		}
	}
	// Let the streams end with their status (the CCM learns the speaker
	// shut down and withdrew, rather than that it was lost), but do not
	// wait long for a CCM that does not read.
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		srv.Stop()
	}
	if hs != nil {
		_ = hs.Close()
	}
	return err
}

// openDHCP opens the DHCP client of an interface: a packet socket, so that
// the node's own DHCP client keeps port 68 (CAP_NET_RAW, as for ARP).
func openDHCP(ifi *net.Interface) (speaker.DHCPClient, error) {
	return dhcp.Listen(ifi)
}
