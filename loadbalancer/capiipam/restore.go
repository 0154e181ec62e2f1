package capiipam

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"

	"github.com/ironlb/ironlb/ipam"
)

// restorePage bounds one List of IPAddresses.
const restorePage = 500

// Restore rebuilds the claims' allocations from the IPAddress objects
// IronLB made (an IronLB IPPool in spec.poolRef, a claim as controller),
// then reserves the opted-in pools' gateways. The Balancer runs it after
// restoring the Services (loadbalancer.WithRestorer): a Service keeps an
// address both name; the claim then gets Ready=False AddressConflict when
// synced. Without Cluster API's IPAM CRDs there is nothing to restore.
// It retries until it can list (or ctx ends): answering before it would
// risk handing a machine's address to a Service.
func (c *Controller) Restore(ctx context.Context) error {
	start := time.Now()
	var n, conflicts int
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Cap: 30 * time.Second, Steps: 1 << 30},
		func(ctx context.Context) (bool, error) {
			var err error
			n, conflicts, err = c.restore(ctx)
			if err != nil {
				c.log.Error(err, "Restoring the Cluster API claims' addresses; trying again")
				return false, nil
			}
			return true, nil
		})
	if err != nil {
		return fmt.Errorf("restoring the Cluster API claims' addresses: %w", err)
	}
	c.reserveGateways()
	c.log.Info("Restored the addresses of Cluster API claims", "ipAddresses", n, "conflicts", conflicts, "duration", time.Since(start))
	return nil
}

func (c *Controller) restore(ctx context.Context) (n, conflicts int, err error) {
	ok, err := c.ipamServed()
	if err != nil || !ok {
		return 0, 0, err
	}
	opts := metav1.ListOptions{Limit: restorePage}
	touched := map[string]bool{}
	for {
		list, err := c.dyn.Resource(AddressResource).List(ctx, opts)
		if err != nil {
			return n, conflicts, fmt.Errorf("listing IPAddresses: %w", err)
		}
		for i := range list.Items {
			addr, err := decode[ipamv1.IPAddress](&list.Items[i])
			if err != nil || !ours(addr.Spec.PoolRef) || !controlledByClaim(addr) {
				continue
			}
			a, err := parseAddress(addr.Spec.Address)
			if err != nil {
				c.log.Info("Ignoring an IPAddress that names an IronLB IPPool", "ipaddress", addr.Namespace+"/"+addr.Name, "error", err)
				continue
			}
			n++
			owner := ownerOf(addr.Namespace, addr.Spec.ClaimRef.Name)
			req := ipam.Request{Owner: owner, Name: nameOf(addr.Namespace, addr.Spec.ClaimRef.Name),
				Subject: ipam.Subject{Namespace: addr.Namespace}, Pool: addr.Spec.PoolRef.Name,
				Families: []ipam.Family{ipam.FamilyOf(a)}, RequireAll: true}
			if err := c.alloc.Restore(req, []netip.Addr{a}); err != nil {
				conflicts++
				c.alloc.Unclaim(owner, nil)
				c.log.Info("An IPAddressClaim's address is held by another owner; it keeps it", "ipaddress", addr.Namespace+"/"+addr.Name, "error", err)
				continue
			}
			touched[addr.Spec.PoolRef.Name] = true
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			break
		}
	}
	for p := range touched {
		c.pools.Touch(p)
	}
	return n, conflicts, nil
}

// controlledByClaim reports whether an IPAddressClaim controls addr.
func controlledByClaim(addr *ipamv1.IPAddress) bool {
	for _, r := range addr.OwnerReferences {
		if r.Controller != nil && *r.Controller && r.Kind == claimGVK.Kind && r.Name == addr.Spec.ClaimRef.Name {
			return true
		}
	}
	return false
}

// reserveGateways keeps the opted-in pools' gateways from claims and
// Services. Run only once Services are restored: a Service that holds a
// gateway already keeps it (logged).
func (c *Controller) reserveGateways() {
	c.mu.Lock()
	defer c.mu.Unlock()
	want := map[string]netip.Addr{}
	for _, name := range c.pools.Pools() {
		p, ok := c.pools.Pool(name)
		if !ok || p.Spec.ClusterAPI == nil || p.Spec.ClusterAPI.Gateway == "" {
			continue
		}
		if gw, err := netip.ParseAddr(p.Spec.ClusterAPI.Gateway); err == nil {
			want[name] = gw
		}
	}
	for name := range c.gateways {
		if _, ok := want[name]; !ok {
			c.alloc.Reserve(gatewayOwner(name), "", nil)
			delete(c.gateways, name)
		}
	}
	for name, gw := range want {
		if refused := c.alloc.Reserve(gatewayOwner(name), "the gateway of IPPool "+name, []netip.Addr{gw}); len(refused) > 0 {
			c.log.Info("A pool's Cluster API gateway is held already; its holder keeps it", "ippool", name, "gateway", gw)
		}
		c.gateways[name] = true
	}
}

func gatewayOwner(pool string) string { return "ippool-gateway/" + pool }
