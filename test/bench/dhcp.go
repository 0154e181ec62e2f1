package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
)

// The dhcp group's addresses: Kea on the LAN at .5 with a shared network
// of the LAN's subnet and two more /24s of documentation space, 500
// addresses in all (DHCP is IPv4-only and the rig may use only
// documentation ranges, so the 1,000 Services are 500 here). The
// IronLB pool of the bulk run has the same 500 addresses.
var (
	dhcpKeaAddr    = netip.MustParsePrefix("192.0.2.5/24")
	dhcpBulkRanges = []string{"198.51.100.1-198.51.100.250", "203.0.113.1-203.0.113.250"}
)

const (
	dhcpBulkServices = 500
	// dhcpBulkTimeout bounds the wait for every bulk Service's address.
	dhcpBulkTimeout = 15 * time.Minute
	// dhcpCreators is how many goroutines create (and delete) the bulk
	// Services.
	dhcpCreators = 8
)

// benchDHCP measures, on the layer-2 rig with the real CCM and speakers at
// their defaults and a real Kea on the LAN (issue 25): how long after a
// Service is created it has an address from a DHCP-backed IPPool and from
// an IronLB pool (median of single Services), and how long 500 Services
// created at once take until all have one, from each kind of pool. After
// the DHCP bulk run it checks that deleting the Services released every
// lease in Kea.
func benchDHCP(ctx context.Context, trials int) error {
	trials = max(trials, minL2Trials)
	if _, err := os.Stat(rig.KeaBin); err != nil {
		return fmt.Errorf("%s not installed (make deps installs it): %w", rig.KeaBin, err)
	}
	cp, lan, r, stop, err := startL2Rig(ctx, rig.L2Options{})
	if err != nil {
		return err
	}
	defer stop()
	k, err := rig.StartKea(lan, rig.KeaOptions{
		Address:       dhcpKeaAddr,
		SharedNetwork: "lan",
		Subnets: []rig.KeaSubnet{
			{Subnet: rig.LANv4},
			{Subnet: netip.MustParsePrefix("198.51.100.0/24"), Pools: []string{"198.51.100.1 - 198.51.100.250"}},
			{Subnet: netip.MustParsePrefix("203.0.113.0/24"), Pools: []string{"203.0.113.1 - 203.0.113.250"}},
		},
		// The lease time is Kea's business, not IronLB's: an hour.
		Valid: 3600, Renew: 900, Rebind: 1800,
	})
	if err != nil {
		return err
	}
	defer k.Close()
	fail := func(err error) error {
		fmt.Fprintf(os.Stderr, "process logs:\n%s\n%s\n", r.Logs(30), k.Output(3000))
		return err
	}
	b := &dhcpBench{cp: cp, kea: k, r: r}
	ranges := "[" + strings.Join(dhcpBulkRanges, ", ") + "]"
	if err := b.applyPool(ctx, "dhcp", "addresses: "+ranges+"\n  autoAssign: false\n  dhcp: {}"); err != nil {
		return fail(err)
	}
	if err := b.applyPool(ctx, "static", "addresses: [192.0.2.200-192.0.2.219]\n  autoAssign: false"); err != nil {
		return fail(err)
	}

	// Warm up (the first lease after a start waits for the speakers to
	// connect), then single Services, alternating the pools.
	for _, pool := range []string{"dhcp", "static"} {
		if _, err := b.createToAddress(ctx, "warmup-"+pool, pool); err != nil {
			return fail(fmt.Errorf("warm-up: %w", err))
		}
	}
	var dhcp, static []float64
	for i := range trials {
		for _, pool := range []string{"dhcp", "static"} {
			d, err := b.createToAddress(ctx, fmt.Sprintf("%s-%d", pool, i), pool)
			if err != nil {
				return fail(err)
			}
			if pool == "dhcp" {
				dhcp = append(dhcp, d.Seconds())
			} else {
				static = append(static, d.Seconds())
			}
		}
	}
	report("dhcp_create_to_address_p50", median(dhcp), "s")
	report("static_create_to_address_p50", median(static), "s")
	if m := median(static); m > 0 {
		report("dhcp_vs_static_create_ratio", median(dhcp)/m, "x")
	}

	// Bulk: 500 Services at once from the DHCP-backed pool, on a fresh
	// lease file, then from an IronLB pool of the same addresses.
	if err := k.NewLeaseFile(); err != nil {
		return fail(err)
	}
	d, addrs, err := b.bulk(ctx, "dhcp", dhcpBulkServices)
	if err != nil {
		return fail(fmt.Errorf("DHCP bulk: %w", err))
	}
	report("dhcp_create_to_address_bulk_s", d.Seconds(), "s")
	report("dhcp_bulk_services", dhcpBulkServices, "services")
	released, err := b.deleteBulk(ctx, "dhcp", addrs)
	report("dhcp_bulk_released", float64(released), "leases")
	if err != nil {
		return fail(fmt.Errorf("DHCP bulk release: %w", err))
	}

	if _, err := b.pools(ctx, "delete", "ippool", "dhcp"); err != nil {
		return fail(err)
	}
	if err := b.applyPool(ctx, "bulk", "addresses: "+ranges+"\n  autoAssign: false"); err != nil {
		return fail(err)
	}
	d, addrs, err = b.bulk(ctx, "bulk", dhcpBulkServices)
	if err != nil {
		return fail(fmt.Errorf("IronLB pool bulk: %w", err))
	}
	report("static_create_to_address_bulk_s", d.Seconds(), "s")
	if _, err := b.deleteBulk(ctx, "bulk", addrs); err != nil {
		return fail(fmt.Errorf("IronLB pool bulk delete: %w", err))
	}
	return nil
}

type dhcpBench struct {
	cp  *controlplane.ControlPlane
	kea *rig.Kea
	r   *rig.L2
}

func (b *dhcpBench) pools(ctx context.Context, args ...string) (string, error) {
	out, err := b.cp.Kubectl(ctx, args...)
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// applyPool applies IPPool name with spec (YAML, indented by two).
func (b *dhcpBench) applyPool(ctx context.Context, name, spec string) error {
	y := fmt.Sprintf("apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata: {name: %s}\nspec:\n  %s\n", name, spec)
	return rig.Eventually(30*time.Second, func() error {
		out, err := b.cp.KubectlStdin(ctx, y, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying pool %s: %w\n%s", name, err, out)
		}
		return nil
	})
}

func poolService(name, pool string) *corev1.Service {
	svc := lbService(name)
	svc.Annotations = map[string]string{"ironlb.dev/pool": pool}
	svc.Labels = map[string]string{"ironlb-bench": pool}
	return svc
}

// createToAddress creates a Service on pool, times it until it has an
// address, then deletes it and waits for the release (the Service gone
// and, for the DHCP pool, the lease released in Kea's file).
func (b *dhcpBench) createToAddress(ctx context.Context, name, pool string) (time.Duration, error) {
	services := b.cp.Client.CoreV1().Services("default")
	start := time.Now()
	if _, err := services.Create(ctx, poolService(name, pool), metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	vip, err := waitVIP(ctx, b.cp, name)
	if err != nil {
		return 0, fmt.Errorf("%w%s", err, b.events(ctx, name))
	}
	d := time.Since(start)
	if err := services.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return 0, err
	}
	err = rig.Eventually(30*time.Second, func() error {
		if _, err := services.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("Service %s not gone (%v)", name, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if pool == "dhcp" {
		if _, err := b.kea.Row(vip, 30*time.Second, name+"'s release", func(r rig.KeaRow) bool { return r.Valid == 0 }); err != nil {
			return 0, err
		}
	}
	return d, nil
}

// events returns the Events of Service name, for errors.
func (b *dhcpBench) events(ctx context.Context, name string) string {
	evs, err := b.cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	var s strings.Builder
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name {
			fmt.Fprintf(&s, "\n  Event %s %s (x%d): %s", e.Type, e.Reason, e.Count, e.Message)
		}
	}
	return s.String()
}

// eventCounts prints how many Events of each reason the Services on pool
// got (Event counts summed), so a slow bulk run shows why.
func (b *dhcpBench) eventCounts(ctx context.Context, prefix string) {
	// The CCM records Events asynchronously: wait until their number
	// holds still for 2 s (at most 30 s).
	var evs *corev1.EventList
	for deadline := time.Now().Add(30 * time.Second); ; {
		l, err := b.cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: dhcp: listing Events: %v\n", err)
			return
		}
		if evs != nil && eventTotal(l) == eventTotal(evs) || time.Now().After(deadline) {
			evs = l
			break
		}
		evs = l
		time.Sleep(2 * time.Second)
	}
	count := map[string]int32{}
	objects := map[string]map[string]bool{}
	messages := map[string]string{}
	for _, e := range evs.Items {
		if !strings.HasPrefix(e.InvolvedObject.Name, prefix) {
			continue
		}
		key := e.Type + " " + e.Reason
		count[key] += max(e.Count, 1)
		if objects[key] == nil {
			objects[key] = map[string]bool{}
		}
		objects[key][e.InvolvedObject.Name] = true
		messages[key] = e.Message
	}
	for _, key := range slices.Sorted(maps.Keys(count)) {
		fmt.Fprintf(os.Stderr, "bench: dhcp: %s Events %s: %d on %d Services (e.g. %q)\n", prefix, key, count[key], len(objects[key]), messages[key])
	}
}

func eventTotal(l *corev1.EventList) int32 {
	var n int32
	for _, e := range l.Items {
		n += max(e.Count, 1)
	}
	return n
}

// leaseLog counts the CCM's "no DHCP lease yet" lines after offset of its
// log, by cause.
func (b *dhcpBench) leaseLog(offset int) {
	log := b.r.CCM.Log()
	if offset > len(log) {
		return
	}
	causes := map[string]int{}
	for _, line := range strings.Split(log[offset:], "\n") {
		if !strings.Contains(line, "Service has no DHCP lease yet") {
			continue
		}
		cause := "other"
		for _, c := range []string{"waiting for its answer", "too many DHCP acquisitions", "DHCPNAK", "context deadline exceeded"} {
			if strings.Contains(line, c) {
				cause = c
				break
			}
		}
		causes[cause]++
	}
	for _, c := range slices.Sorted(maps.Keys(causes)) {
		fmt.Fprintf(os.Stderr, "bench: dhcp: CCM log \"Service has no DHCP lease yet\" (%s): %d lines\n", c, causes[c])
	}
}

// bulk creates n Services on pool at once, from several goroutines, and
// returns how long until every one had an address, and the addresses.
func (b *dhcpBench) bulk(ctx context.Context, pool string, n int) (time.Duration, []netip.Addr, error) {
	services := b.cp.Client.CoreV1().Services("default")
	sel := metav1.ListOptions{LabelSelector: "ironlb-bench=" + pool}
	list, err := services.List(ctx, sel)
	if err != nil {
		return 0, nil, err
	}
	if len(list.Items) > 0 {
		return 0, nil, fmt.Errorf("%d Services of pool %s left from before", len(list.Items), pool)
	}
	w, err := services.Watch(ctx, metav1.ListOptions{LabelSelector: sel.LabelSelector, ResourceVersion: list.ResourceVersion})
	if err != nil {
		return 0, nil, err
	}
	defer func() { w.Stop() }()
	prefix := "bulk-" + pool + "-"
	logOffset := len(b.r.CCM.Log())
	start := time.Now()
	createErr := make(chan error, 1)
	go func() {
		createErr <- parallel(n, func(i int) error {
			_, err := services.Create(ctx, poolService(fmt.Sprintf("%s%d", prefix, i), pool), metav1.CreateOptions{})
			return err
		})
	}()
	addrs := map[string]netip.Addr{}
	created := time.Duration(0)
	deadline := time.After(dhcpBulkTimeout)
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
	for len(addrs) < n {
		select {
		case err := <-createErr:
			if err != nil {
				return 0, nil, fmt.Errorf("creating Services: %w", err)
			}
			created = time.Since(start)
			createErr = nil
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "bench: dhcp: %s: %d of %d Services have an address after %.0f s\n", pool, len(addrs), n, time.Since(start).Seconds())
		case <-deadline:
			b.eventCounts(ctx, prefix)
			b.leaseLog(logOffset)
			return 0, nil, fmt.Errorf("%d of %d Services have an address after %s", len(addrs), n, dhcpBulkTimeout)
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The watch ended: pick up from a list.
				list, err := services.List(ctx, sel)
				if err != nil {
					return 0, nil, err
				}
				for i := range list.Items {
					record(addrs, &list.Items[i])
				}
				if w, err = services.Watch(ctx, metav1.ListOptions{LabelSelector: sel.LabelSelector, ResourceVersion: list.ResourceVersion}); err != nil {
					return 0, nil, err
				}
				continue
			}
			if svc, ok := ev.Object.(*corev1.Service); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				record(addrs, svc)
			}
		}
	}
	d := time.Since(start)
	fmt.Fprintf(os.Stderr, "bench: dhcp: %s: %d Services created in %.1f s, all with an address after %.1f s\n", pool, n, created.Seconds(), d.Seconds())
	b.eventCounts(ctx, prefix)
	b.leaseLog(logOffset)
	out := slices.Collect(maps.Values(addrs))
	slices.SortFunc(out, netip.Addr.Compare)
	if c := len(slices.Compact(slices.Clone(out))); c != n {
		return 0, nil, fmt.Errorf("%d Services have %d distinct addresses", n, c)
	}
	return d, out, nil
}

func record(addrs map[string]netip.Addr, svc *corev1.Service) {
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		return
	}
	if a, err := netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP); err == nil {
		addrs[svc.Name] = a
	}
}

// deleteBulk deletes the bulk Services of pool, waits until they are gone
// and, for the DHCP pool, until Kea's file shows addrs released; it returns
// how many are.
func (b *dhcpBench) deleteBulk(ctx context.Context, pool string, addrs []netip.Addr) (int, error) {
	services := b.cp.Client.CoreV1().Services("default")
	sel := metav1.ListOptions{LabelSelector: "ironlb-bench=" + pool}
	list, err := services.List(ctx, sel)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	err = parallel(len(list.Items), func(i int) error {
		err := services.Delete(ctx, list.Items[i].Name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	err = rig.Eventually(5*time.Minute, func() error {
		l, err := services.List(ctx, sel)
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d Services of pool %s not gone", len(l.Items), pool)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "bench: dhcp: %s: %d Services deleted and gone in %.1f s\n", pool, len(list.Items), time.Since(start).Seconds())
	if pool != "dhcp" {
		return 0, nil
	}
	released := 0
	err = rig.Eventually(2*time.Minute, func() error {
		rows, err := b.kea.Rows()
		if err != nil {
			return err
		}
		released = 0
		var held []netip.Addr
		for _, a := range addrs {
			if r, ok := rows[a]; ok && r.Valid == 0 {
				released++
			} else {
				held = append(held, a)
			}
		}
		var others []netip.Addr
		for a, r := range rows {
			if r.Valid > 0 && !slices.Contains(addrs, a) {
				others = append(others, a)
			}
		}
		if len(held) > 0 || len(others) > 0 {
			return fmt.Errorf("%d of %d leases not released in Kea's file (e.g. %v); leases of no Service: %v", len(held), len(addrs), held[:min(len(held), 5)], others)
		}
		return nil
	})
	fmt.Fprintf(os.Stderr, "bench: dhcp: %d of %d leases released %.1f s after the deletes\n", released, len(addrs), time.Since(start).Seconds())
	return released, err
}

// parallel runs f(0..n-1) from dhcpCreators goroutines; the first error
// wins.
func parallel(n int, f func(i int) error) error {
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range dhcpCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d failed: %w", len(errs), errors.Join(errs[:min(len(errs), 3)]...))
	}
	return nil
}
