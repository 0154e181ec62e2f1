// Package lbclass decides which Services IronLB serves by their
// spec.loadBalancerClass, and serves the Services of IronLB's own class,
// which the cloud-provider service controller leaves alone (it serves only
// Services without a class).
//
// The policy: a Service of type LoadBalancer is IronLB's when its class is
// IronLB's (ironlb.dev/ironlb unless configured otherwise), or when it has
// no class and IronLB is not told to serve only its class. A Service of
// any other class is never touched: no finalizer, no status, no Event; its
// addresses are only kept from IronLB's Services (see the Balancer).
//
// Cleanup follows finalizers. The service controller puts
// service.kubernetes.io/load-balancer-cleanup on the class-less Services
// it serves; Controller puts Finalizer on those of IronLB's class, a
// finalizer of its own, because the service controller (IronLB's, or
// another cloud's) cleans up any Service that carries its finalizer. A
// Service keeps being IronLB's, for releasing its addresses, while it
// carries the finalizer of whoever served it: after a change of type
// (which clears the class) and while it is being deleted.
package lbclass

import (
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// DefaultName is the loadBalancerClass IronLB serves unless configured
// otherwise.
const DefaultName = "ironlb.dev/ironlb"

// Finalizer is the finalizer IronLB puts on the Services of its class, so
// that their addresses are released before they go.
const Finalizer = "ironlb.dev/load-balancer-cleanup"

// StandardFinalizer is the service controller's finalizer, on the
// class-less Services it serves.
const StandardFinalizer = "service.kubernetes.io/load-balancer-cleanup"

// Policy says which Services IronLB serves.
type Policy struct {
	// Name is IronLB's loadBalancerClass; empty means DefaultName.
	Name string
	// Only makes IronLB serve only Services of class Name, and leave the
	// class-less ones to another implementation.
	Only bool
}

// Class returns IronLB's loadBalancerClass.
func (p Policy) Class() string {
	if p.Name == "" {
		return DefaultName
	}
	return p.Name
}

// Validate checks the class name as the API server checks a Service's
// spec.loadBalancerClass (a qualified name, like a label key).
func (p Policy) Validate() error {
	if p.Name == "" {
		return nil
	}
	if errs := validation.IsQualifiedName(p.Name); len(errs) > 0 {
		return fmt.Errorf("loadBalancerClass.name %q: %v", p.Name, errs)
	}
	return nil
}

// Classless reports whether IronLB serves Services without a class (the
// service controller's).
func (p Policy) Classless() bool { return !p.Only }

// OfClass reports whether svc has IronLB's loadBalancerClass.
func (p Policy) OfClass(svc *v1.Service) bool {
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == p.Class()
}

// Serves reports whether svc wants a load balancer from IronLB: it is of
// type LoadBalancer and of IronLB's class, or class-less while IronLB
// serves class-less Services. It says nothing of deletion.
func (p Policy) Serves(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return p.Classless()
	}
	return p.OfClass(svc)
}

// Owns reports whether IronLB holds, or may hold, svc's addresses: it
// serves svc, or svc still carries the finalizer of the controller that
// served it for IronLB (Finalizer; the service controller's on a
// class-less Service while IronLB serves those), or svc is Legacy. Every
// other Service is another implementation's.
func (p Policy) Owns(svc *v1.Service) bool {
	switch {
	case p.Serves(svc), slices.Contains(svc.Finalizers, Finalizer):
		return true
	case svc.Spec.LoadBalancerClass != nil:
		return false
	case p.Classless():
		return slices.Contains(svc.Finalizers, StandardFinalizer)
	}
	return p.Legacy(svc)
}

// Legacy reports whether svc is a class-less Service that IronLB served
// before it was told to serve only its class: it carries the service
// controller's finalizer and IronLB's Announced condition (only IronLB
// writes it, so a class-less Service that carries it was served by
// IronLB). IronLB keeps
// its addresses (an existing Service keeps its address unless the user
// asks: DESIGN invariant 3) and releases them when it is deleted or
// changes type.
func (p Policy) Legacy(svc *v1.Service) bool {
	return p.Only && svc.Spec.LoadBalancerClass == nil &&
		slices.Contains(svc.Finalizers, StandardFinalizer) &&
		meta.FindStatusCondition(svc.Status.Conditions, announced.Condition) != nil
}

// Describe names svc's class for messages: its loadBalancerClass, or
// "no loadBalancerClass".
func Describe(svc *v1.Service) string {
	if svc.Spec.LoadBalancerClass == nil {
		return "no loadBalancerClass"
	}
	return "loadBalancerClass " + *svc.Spec.LoadBalancerClass
}
