package capiipam

import (
	"errors"
	"fmt"
	"net/netip"

	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
)

// refusal is why a claim gets no address: the Ready condition's reason
// and message.
type refusal struct {
	reason  Reason
	message string
}

func (r *refusal) Error() string { return string(r.reason) + ": " + r.message }

// answer is what a claim's IPAddress says.
type answer struct {
	addr    netip.Addr
	prefix  int32
	gateway string
	pool    *v1alpha1.IPPool // nil when the pool no longer exists
}

// allocate gives claim its address: the one its IPAddress names when it
// has one (existing), else a new one from its pool. A claim that holds an
// address keeps it whatever its pool became (deleted, opted out, refusing
// the namespace): nothing that works is taken away.
func (c *Controller) allocate(claim *ipamv1.IPAddressClaim, existing *ipamv1.IPAddress) (answer, error) {
	owner, name := ownerOf(claim.Namespace, claim.Name), nameOf(claim.Namespace, claim.Name)
	poolName := claim.Spec.PoolRef.Name
	pool, found := c.pools.Pool(poolName)
	if existing != nil {
		addr, err := parseAddress(existing.Spec.Address)
		if err != nil {
			return answer{}, &refusal{ReasonAllocationFailed, fmt.Sprintf("IPAddress %s/%s: %v", existing.Namespace, existing.Name, err)}
		}
		req := ipam.Request{Owner: owner, Name: name, Subject: c.subjectOf(claim), Pool: poolName,
			Addresses: []netip.Addr{addr}, Families: []ipam.Family{ipam.FamilyOf(addr)}, RequireAll: true}
		if _, held := c.alloc.Lookup(owner); !held {
			// Restore's rule: keep what the IPAddress says unless another
			// owner holds it (the restore gave it to a Service).
			if err := c.alloc.Restore(req, req.Addresses); err != nil {
				c.alloc.Unclaim(owner, nil) // the holder keeps it; no stale claim
				return answer{}, refusalOf(err, poolName)
			}
			c.pools.Touch(poolName)
		}
		out := answer{addr: addr, gateway: existing.Spec.Gateway}
		if existing.Spec.Prefix != nil {
			out.prefix = *existing.Spec.Prefix
		}
		if found {
			out.pool = pool
		}
		return out, nil
	}
	if !found {
		return answer{}, &refusal{ReasonPoolNotFound, fmt.Sprintf("IPPool %s does not exist", poolName)}
	}
	spec := pool.Spec.ClusterAPI
	if spec == nil {
		return answer{}, &refusal{ReasonPoolNotEnabled, fmt.Sprintf("IPPool %s does not answer Cluster API claims: its spec.clusterAPI is not set", poolName)}
	}
	p, err := ippool.ToPool(pool)
	if err != nil {
		return answer{}, &refusal{ReasonPoolNotReady, err.Error()}
	}
	fam, err := familyOf(p, spec)
	if err != nil {
		return answer{}, &refusal{ReasonPoolNotReady, fmt.Sprintf("IPPool %s: %v", poolName, err)}
	}
	subject := c.subjectOf(claim)
	if p.Refuses != nil {
		if err := p.Refuses(subject); err != nil {
			return answer{}, &refusal{ReasonNamespaceNotAllowed, fmt.Sprintf("IPPool %s does not allow this claim: %v", poolName, err)}
		}
	}
	al, err := c.alloc.Ensure(ipam.Request{Owner: owner, Name: name, Subject: subject, Pool: poolName,
		Families: []ipam.Family{fam}, RequireAll: true})
	if err != nil {
		return answer{}, refusalOf(err, poolName)
	}
	return answer{addr: al.Addresses[0], prefix: spec.Prefix, gateway: spec.Gateway, pool: pool}, nil
}

// familyOf is the family a pool answers claims in: IPv4 when it has IPv4
// addresses, else IPv6 (a claim has no family). The gateway must be of
// that family and the prefix fit it.
func familyOf(p ipam.Pool, spec *v1alpha1.ClusterAPI) (ipam.Family, error) {
	fam := ipam.IPv6
	for _, r := range p.Ranges {
		if r.Family() == ipam.IPv4 {
			fam = ipam.IPv4
		}
	}
	bits := int32(128)
	if fam == ipam.IPv4 {
		bits = 32
	}
	if spec.Prefix > bits {
		return 0, fmt.Errorf("spec.clusterAPI.prefix %d is longer than an %s address", spec.Prefix, fam)
	}
	if spec.Gateway != "" {
		gw, err := netip.ParseAddr(spec.Gateway)
		if err != nil {
			return 0, fmt.Errorf("spec.clusterAPI.gateway: %w", err)
		}
		if ipam.FamilyOf(gw) != fam {
			return 0, fmt.Errorf("spec.clusterAPI.gateway %s is not %s, the family the pool answers claims in", gw, fam)
		}
	}
	return fam, nil
}

// refusalOf turns an allocator error into a refusal.
func refusalOf(err error, pool string) *refusal {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return &refusal{ReasonPoolExhausted, fmt.Sprintf("IPPool %s has no free address: %v", pool, err)}
	case errors.Is(err, ipam.ErrConflict):
		return &refusal{ReasonAddressConflict, fmt.Sprintf("%v; IronLB keeps the address for its current holder and deletes nothing: free it, or delete this claim", err)}
	}
	return &refusal{ReasonAllocationFailed, err.Error()}
}
