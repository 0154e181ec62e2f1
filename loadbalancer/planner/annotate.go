package planner

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// annotate writes AnnotationAnnouncedBy on the Service when it changed.
func (p *Planner) annotate(key string) error {
	if p.opts.Client == nil {
		return nil
	}
	ns, name, _ := strings.Cut(key, "/")
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	want := p.announcedBy(key)
	have, ok := svc.Annotations[AnnotationAnnouncedBy]
	if (want == "" && !ok) || (ok && have == want) {
		return nil
	}
	var patch []byte
	if want == "" {
		patch = fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null}}}`, AnnotationAnnouncedBy)
	} else {
		patch = fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, AnnotationAnnouncedBy, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.opts.Client.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// announcedBy is the annotation's value for a Service: each VIP with the
// node announcing it, "-" for none.
func (p *Planner) announcedBy(key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, a := range p.bySvc[key] {
		owner := "-"
		if v := p.vips[a]; v != nil && len(v.announcers) > 0 {
			owner = strings.Join(v.announcers, "+")
		}
		parts = append(parts, a.String()+"="+owner)
	}
	return strings.Join(parts, ",")
}
