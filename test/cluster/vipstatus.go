package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ironlb/ironlb/cpvip"
)

// SpeakerStatusPort is the control-plane speaker's health port: /status
// on the node's address.
const SpeakerStatusPort = 7476

// maxStatusBytes bounds a /status answer.
const maxStatusBytes = 1 << 20

// SpeakerView is one control-plane speaker's /status, or why it could not
// be read.
type SpeakerView struct {
	Node   string
	Status cpvip.Status
	Err    error
}

// SpeakerViews reads every control-plane speaker's /status directly from
// the outside client (http://<node IP>:7476/status), all at once, each
// within a second.
func (c *Cluster) SpeakerViews(ctx context.Context) []SpeakerView {
	cps := c.ControlPlaneNodes()
	views := make([]SpeakerView, len(cps))
	done := make(chan struct{}, len(cps))
	for i := range cps {
		go func() {
			defer func() { done <- struct{}{} }()
			views[i].Node = NodeName(i + 1)
			views[i].Status, views[i].Err = c.speakerStatus(ctx, i+1)
		}()
	}
	for range cps {
		<-done
	}
	return views
}

func (c *Cluster) speakerStatus(ctx context.Context, n int) (cpvip.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: c.DialContext, DisableKeepAlives: true}}
	url := fmt.Sprintf("http://%s:%d/status", NodeIP(n), SpeakerStatusPort)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return cpvip.Status{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return cpvip.Status{}, fmt.Errorf("%s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStatusBytes+1))
	if err != nil {
		return cpvip.Status{}, fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return cpvip.Status{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	if len(body) > maxStatusBytes {
		return cpvip.Status{}, fmt.Errorf("%s: more than %d bytes", url, maxStatusBytes)
	}
	var s cpvip.Status
	if err := json.Unmarshal(body, &s); err != nil {
		return cpvip.Status{}, fmt.Errorf("%s: %w", url, err)
	}
	if s.Node != NodeName(n) {
		return cpvip.Status{}, fmt.Errorf("%s: the speaker says it is on %q", url, s.Node)
	}
	return s, nil
}

// Serving lists the nodes whose speaker says it serves the VIP.
func Serving(views []SpeakerView) []string {
	var out []string
	for _, v := range views {
		if v.Err == nil && v.Status.Serving {
			out = append(out, v.Node)
		}
	}
	return out
}

// settledHolder returns the one node that holds the VIP when every
// speaker but those in skip answers, has a ready API server, and they
// agree: exactly one serves, and every one names it as the holder.
func settledHolder(views []SpeakerView, skip ...string) (holder string, epoch uint64, err error) {
	var errs []error
	for _, v := range views {
		if slices.Contains(skip, v.Node) {
			continue
		}
		switch {
		case v.Err != nil:
			errs = append(errs, v.Err)
		case !v.Status.APIServerReady:
			errs = append(errs, fmt.Errorf("%s: API server not ready (%s)", v.Node, v.Status.APIServerError))
		}
	}
	if len(errs) > 0 {
		return "", 0, errors.Join(errs...)
	}
	var serving []string
	for _, v := range views {
		if !slices.Contains(skip, v.Node) && v.Status.Serving {
			serving = append(serving, v.Node)
		}
	}
	if len(serving) != 1 {
		return "", 0, fmt.Errorf("%d nodes serve the VIP (%s), want 1", len(serving), strings.Join(serving, ", "))
	}
	holder = serving[0]
	for _, v := range views {
		if slices.Contains(skip, v.Node) {
			continue
		}
		if v.Status.Holder != holder {
			return "", 0, fmt.Errorf("%s says %q holds the VIP, %s says it does", v.Node, v.Status.Holder, holder)
		}
		if v.Node == holder {
			epoch = v.Status.Epoch
		}
	}
	return holder, epoch, nil
}

// WaitHolder waits until the control-plane speakers (but those in skip)
// all answer with a ready API server and agree on one holder of the VIP,
// and returns it and its epoch.
func (c *Cluster) WaitHolder(ctx context.Context, timeout time.Duration, skip ...string) (holder string, epoch uint64, err error) {
	err = poll(ctx, timeout, func() error {
		var err error
		holder, epoch, err = settledHolder(c.SpeakerViews(ctx), skip...)
		return err
	})
	return holder, epoch, err
}
