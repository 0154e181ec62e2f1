// Package scale creates many LoadBalancer Services at once and measures how
// long they take to get their addresses, for tests and benchmarks.
package scale

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Name returns the name of the i-th Service.
func Name(prefix string, i int) string { return fmt.Sprintf("%s-%04d", prefix, i) }

// Service returns the i-th Service: even ones IPv4, odd ones IPv6, each on
// port 80.
func Service(namespace, prefix string, i int) *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	family := corev1.IPv4Protocol
	if i%2 == 1 {
		family = corev1.IPv6Protocol
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: Name(prefix, i), Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: &single,
			IPFamilies:     []corev1.IPFamily{family},
			Selector:       map[string]string{"app": prefix},
			Ports:          []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// CreateServices creates n Services with 8 concurrent clients and returns
// when all exist. The returned times are when each create call was sent.
// Each mutate changes every Service before it is created.
func CreateServices(ctx context.Context, client kubernetes.Interface, namespace, prefix string, n int, mutate ...func(*corev1.Service)) error {
	_, err := createServices(ctx, client, namespace, prefix, n, mutate)
	return err
}

func createServices(ctx context.Context, client kubernetes.Interface, namespace, prefix string, n int, mutate []func(*corev1.Service)) (map[string]time.Time, error) {
	var mu sync.Mutex
	sent := make(map[string]time.Time, n)
	next := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				svc := Service(namespace, prefix, i)
				for _, m := range mutate {
					m(svc)
				}
				mu.Lock()
				sent[svc.Name] = time.Now()
				mu.Unlock()
				if _, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating Service %s: %w", svc.Name, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	return sent, err
}

// Addresses returns the first ingress address of every Service in the
// namespace that has one, by name.
func Addresses(ctx context.Context, client kubernetes.Interface, namespace string) (map[string]string, error) {
	list, err := client.CoreV1().Services(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			out[s.Name] = s.Status.LoadBalancer.Ingress[0].IP
		}
	}
	return out, nil
}

// Result is the outcome of Measure.
type Result struct {
	// AllAssigned is the time from the first create call until every
	// Service had an address.
	AllAssigned time.Duration
	// AfterLastCreate is the time from the return of the last create call
	// until every Service had an address.
	AfterLastCreate time.Duration
	// Latencies are, per Service, the time from its create call until a
	// watch saw its address, sorted.
	Latencies []time.Duration
}

// Quantile returns the q-quantile (0..1) of the latencies.
func (r Result) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

// Measure creates n Services (each changed by mutate) and watches until
// all have addresses.
func Measure(ctx context.Context, client kubernetes.Interface, namespace, prefix string, n int, mutate ...func(*corev1.Service)) (Result, error) {
	w, err := client.CoreV1().Services(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return Result{}, err
	}
	defer w.Stop()
	start := time.Now()
	type created struct {
		sent map[string]time.Time
		err  error
	}
	done := make(chan created, 1)
	go func() {
		sent, err := createServices(ctx, client, namespace, prefix, n, mutate)
		done <- created{sent, err}
	}()
	seen := make(map[string]time.Time, n)
	var sent map[string]time.Time
	var lastCreated time.Time
	for len(seen) < n || sent == nil {
		select {
		case c := <-done:
			if c.err != nil {
				return Result{}, c.err
			}
			sent = c.sent
			lastCreated = time.Now()
			done = nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return Result{}, fmt.Errorf("watch closed with %d of %d Services served", len(seen), n)
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			svc, ok := ev.Object.(*corev1.Service)
			if ok && len(svc.Status.LoadBalancer.Ingress) > 0 {
				if _, dup := seen[svc.Name]; !dup {
					seen[svc.Name] = time.Now()
				}
			}
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w with %d of %d Services served", ctx.Err(), len(seen), n)
		}
	}
	var res Result
	for name, at := range seen {
		res.Latencies = append(res.Latencies, at.Sub(sent[name]))
		if d := at.Sub(start); d > res.AllAssigned {
			res.AllAssigned = d
		}
		if d := at.Sub(lastCreated); d > res.AfterLastCreate {
			res.AfterLastCreate = d
		}
	}
	slices.Sort(res.Latencies)
	return res, nil
}
