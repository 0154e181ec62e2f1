package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
)

// WriteJSON writes st as indented JSON.
func (st *Status) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

// WriteTable writes st as four tables (five with a control-plane VIP); ages are relative to now. Every
// cell is escaped (Escape): names, messages and errors come from the API,
// where tenants, nodes and speakers write them.
func (st *Status) WriteTable(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "POOLS")
	fmt.Fprintln(tw, "NAME\tMODE\tADDRESSES\tAUTO\tPRIORITY\tUSED\tFREE IPV4\tFREE IPV6\tREADY")
	for _, p := range st.Pools {
		ready := dash(p.Ready)
		if p.ReadyMessage != "" {
			ready += " (" + Escape(p.ReadyMessage) + ")"
		}
		if p.Conflicting != "" {
			ready += " conflicting: " + Escape(p.Conflicting)
		}
		row(tw, p.Name, p.Mode, list(p.Addresses), fmt.Sprint(p.AutoAssign), fmt.Sprint(p.Priority),
			fmt.Sprint(p.Used), dash(p.FreeIPv4), dash(p.FreeIPv6), ready)
	}
	fmt.Fprintln(tw, "\nVIPS")
	fmt.Fprintln(tw, "SERVICE\tADDRESS\tPOOL\tLAYER 2 NODE\tBGP NODES\tSTATE")
	for _, v := range st.VIPs {
		addr := v.Address
		if v.SharingKey != "" {
			addr = Escape(addr) + " (shared: " + Escape(v.SharingKey) + ")"
		}
		if addr == "" {
			addr = "<pending>"
		}
		row(tw, v.Service, addr, dash(v.Pool), list(v.Layer2), list(v.BGP), v.State)
	}
	fmt.Fprintln(tw, "\nSPEAKERS")
	fmt.Fprintln(tw, "NODE\tPOD\tREADY\tVERSION\tCONNECTED\tHEALTHY")
	for _, s := range st.Speakers {
		ready := "-"
		if s.Pod != "" {
			ready = fmt.Sprint(s.Ready)
		}
		row(tw, s.Node, dash(s.Pod), ready, dash(s.Version), yesNo(s.Connected), yesNo(s.Healthy))
	}
	fmt.Fprintln(tw, "\nBGP SESSIONS")
	fmt.Fprintln(tw, "PEER\tADDRESS\tNODE\tSTATE\tSINCE\tROUTES\tBFD\tLAST ERROR")
	for _, s := range st.Sessions {
		row(tw, s.Peer, s.PeerAddress, s.Node, s.State, Age(s.Since, now), fmt.Sprint(s.Routes), dash(s.BFD), dash(s.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.ControlPlane != nil {
		st.ControlPlane.write(w)
	}
	switch {
	case st.Metrics == nil:
		_, err := fmt.Fprintln(w, "\nCONNECTED and HEALTHY come from the CCM's metrics: give --metrics-url.")
		return err
	case st.Metrics.Error != "":
		_, err := fmt.Fprintf(w, "\nThe CCM's metrics at %s could not be read: %s\n", Escape(st.Metrics.URL), Escape(st.Metrics.Error))
		return err
	}
	return nil
}

func shortDuration(d time.Duration) string { return duration.HumanDuration(d) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// list joins names, each escaped.
func list(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	escaped := make([]string, len(l))
	for i, s := range l {
		escaped[i] = Escape(s)
	}
	return strings.Join(escaped, ",")
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "-"
	case *b:
		return "yes"
	}
	return "no"
}
