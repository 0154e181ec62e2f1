package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Namespace holds the chaos suite's Services.
const Namespace = "chaos"

// churn creates, updates and deletes Services at a steady rate, keeping
// their number between Low and High: updates change ports, annotations and
// sharing keys; with High above the pool's size, exhaustion and reuse of
// addresses happen.
type churn struct {
	client    kubernetes.Interface
	low, high int
	rate      float64 // operations per second
	rng       *rand.Rand

	mu      sync.Mutex
	live    []string
	next    int
	ops     map[string]int
	created int
}

// sharingKeys are the keys shared Services use; portChoices their ports.
var (
	sharingKeys = []string{"k0", "k1", "k2", "k3", "k4"}
	portChoices = []int32{80, 443, 8080, 8443, 9000, 9443}
)

func newChurn(client kubernetes.Interface, low, high int, rate float64, seed uint64) *churn {
	return &churn{client: client, low: low, high: high, rate: rate, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), ops: map[string]int{}}
}

// service returns a new churn Service: most plain, a fifth sharing an
// address under one of a few keys.
func (c *churn) service(name string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:           corev1.ServiceTypeLoadBalancer,
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol},
			Selector:       map[string]string{"app": name},
			Ports:          []corev1.ServicePort{{Name: "p", Port: portChoices[c.rng.IntN(len(portChoices))], TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if c.rng.IntN(5) == 0 {
		svc.Annotations["ironlb.dev/allow-shared-ip"] = sharingKeys[c.rng.IntN(len(sharingKeys))]
	}
	return svc
}

// seed creates n Services before the faults start.
func (c *churn) seed(ctx context.Context, n int) error {
	for range n {
		if err := c.create(ctx); err != nil {
			return err
		}
	}
	return nil
}

// run churns until ctx ends.
func (c *churn) run(ctx context.Context) {
	t := time.NewTicker(time.Duration(float64(time.Second) / c.rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.step(ctx); err != nil && ctx.Err() == nil {
			logf("churn: %v", err)
		}
	}
}

func (c *churn) step(ctx context.Context) error {
	c.mu.Lock()
	n := len(c.live)
	roll := c.rng.IntN(100)
	c.mu.Unlock()
	switch {
	case n < c.low || (n < c.high && roll < 35):
		return c.create(ctx)
	case n >= c.high || roll < 60:
		return c.delete(ctx)
	case roll < 75:
		return c.update(ctx, "port", func(s *corev1.Service) {
			s.Spec.Ports[0].Port = portChoices[c.rng.IntN(len(portChoices))]
		})
	case roll < 90:
		return c.update(ctx, "annotation", func(s *corev1.Service) {
			s.Annotations["chaos.ironlb.dev/touched"] = fmt.Sprint(c.rng.Int())
		})
	default:
		return c.update(ctx, "sharing key", func(s *corev1.Service) {
			if c.rng.IntN(3) == 0 {
				delete(s.Annotations, "ironlb.dev/allow-shared-ip")
			} else {
				s.Annotations["ironlb.dev/allow-shared-ip"] = sharingKeys[c.rng.IntN(len(sharingKeys))]
			}
		})
	}
}

func (c *churn) create(ctx context.Context) error {
	c.mu.Lock()
	name := fmt.Sprintf("c-%05d", c.next)
	c.next++
	svc := c.service(name)
	c.mu.Unlock()
	if _, err := c.client.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	c.mu.Lock()
	c.live = append(c.live, name)
	c.ops["create"]++
	c.created++
	c.mu.Unlock()
	return nil
}

func (c *churn) pick() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.live) == 0 {
		return "", false
	}
	return c.live[c.rng.IntN(len(c.live))], true
}

func (c *churn) delete(ctx context.Context) error {
	name, ok := c.pick()
	if !ok {
		return nil
	}
	err := c.client.CoreV1().Services(Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s: %w", name, err)
	}
	c.mu.Lock()
	for i, n := range c.live {
		if n == name {
			c.live = append(c.live[:i], c.live[i+1:]...)
			break
		}
	}
	c.ops["delete"]++
	c.mu.Unlock()
	return nil
}

func (c *churn) update(ctx context.Context, what string, mutate func(*corev1.Service)) error {
	name, ok := c.pick()
	if !ok {
		return nil
	}
	svc, err := c.client.CoreV1().Services(Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	c.mu.Lock()
	mutate(svc)
	c.mu.Unlock()
	if _, err := c.client.CoreV1().Services(Namespace).Update(ctx, svc, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating the %s of %s: %w", what, name, err)
	}
	c.mu.Lock()
	c.ops[what]++
	c.mu.Unlock()
	return nil
}

// counts returns the operations done and the Services created.
func (c *churn) counts() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.ops {
		out[k] = v
	}
	return out, c.created
}
