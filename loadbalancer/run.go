package loadbalancer

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/cloud-provider/api"
)

// Run waits for the caches, rebuilds every allocation from the Services'
// status, reserves the Nodes' addresses and the control-plane VIPs (taking
// those from Services that held them) and then lets calls through; it
// then completes PreferDualStack Services when pools change, until ctx
// ends.
func (b *Balancer) Run(ctx context.Context) error {
	defer b.dualStack.ShutDown()
	defer b.policyQueue.ShutDown()
	defer b.leaseQueue.ShutDown()
	defer b.declineQueue.ShutDown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, b.synced...) {
		return fmt.Errorf("waiting for caches: %w", ctx.Err())
	}
	if err := b.restoreAll(ctx); err != nil {
		return err
	}
	close(b.ready)
	// A control-plane VIP source that synced between reserveControlPlane
	// and close(b.ready) saw the balancer not ready and reserved nothing;
	// so did a Service of another load balancer that changed meanwhile.
	b.reserveControlPlane()
	b.reserveAllForeign()
	// The loops, each in the file of its queue.
	go b.runPolicy(ctx)
	go b.runControlPlane(ctx)
	go b.runLeaseQueue(ctx)
	go b.runDeclines()
	go func() {
		<-ctx.Done()
		b.dualStack.ShutDown()
		b.leaseQueue.ShutDown()
		b.declineQueue.ShutDown()
	}()
	b.completeDualStack(ctx) // dualstack.go
	return nil
}

// Restored is closed once allocations have been restored and the
// Balancer answers calls: other allocators of addresses (Cluster API
// claims) wait for it too.
func (b *Balancer) Restored() <-chan struct{} { return b.ready }

// Ready reports whether allocations have been restored.
func (b *Balancer) Ready() bool {
	select {
	case <-b.ready:
		return true
	default:
		return false
	}
}

// notReadyWait bounds how long a call waits for Run, so that a missing CRD
// or an unreachable API server shows up as an error on the Service instead
// of a hung worker.
const notReadyWait = 30 * time.Second

func (b *Balancer) waitReady(ctx context.Context) error {
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("IronLB is still restoring allocations: %w", ctx.Err())
	case <-time.After(notReadyWait):
		return api.NewRetryError("IronLB is not ready: its Service, Namespace and IPPool caches have not synced "+
			"(is the IPPool CRD installed? kubectl apply -k deploy/)", b.retry)
	}
}
