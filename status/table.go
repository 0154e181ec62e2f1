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

// WriteTable writes st as four tables; ages are relative to now.
func (st *Status) WriteTable(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "POOLS")
	fmt.Fprintln(tw, "NAME\tMODE\tADDRESSES\tAUTO\tPRIORITY\tUSED\tFREE IPV4\tFREE IPV6\tREADY")
	for _, p := range st.Pools {
		ready := dash(p.Ready)
		if p.ReadyMessage != "" {
			ready += " (" + p.ReadyMessage + ")"
		}
		if p.Conflicting != "" {
			ready += " conflicting: " + p.Conflicting
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%d\t%d\t%s\t%s\t%s\n", p.Name, p.Mode, strings.Join(p.Addresses, ","),
			p.AutoAssign, p.Priority, p.Used, dash(p.FreeIPv4), dash(p.FreeIPv6), ready)
	}
	fmt.Fprintln(tw, "\nVIPS")
	fmt.Fprintln(tw, "SERVICE\tADDRESS\tPOOL\tLAYER 2 NODE\tBGP NODES\tSTATE")
	for _, v := range st.VIPs {
		addr := v.Address
		if v.SharingKey != "" {
			addr += " (shared: " + v.SharingKey + ")"
		}
		if addr == "" {
			addr = "<pending>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Service, addr, dash(v.Pool), list(v.Layer2), list(v.BGP), v.State)
	}
	fmt.Fprintln(tw, "\nSPEAKERS")
	fmt.Fprintln(tw, "NODE\tPOD\tREADY\tVERSION\tCONNECTED\tHEALTHY")
	for _, s := range st.Speakers {
		ready := "-"
		if s.Pod != "" {
			ready = fmt.Sprint(s.Ready)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, dash(s.Pod), ready, dash(s.Version), yesNo(s.Connected), yesNo(s.Healthy))
	}
	fmt.Fprintln(tw, "\nBGP SESSIONS")
	fmt.Fprintln(tw, "PEER\tADDRESS\tNODE\tSTATE\tSINCE\tROUTES\tBFD\tLAST ERROR")
	for _, s := range st.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Peer, s.PeerAddress, s.Node, s.State, Age(s.Since, now), s.Routes, dash(s.BFD), dash(s.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case st.Metrics == nil:
		_, err := fmt.Fprintln(w, "\nCONNECTED and HEALTHY come from the CCM's metrics: give --metrics-url.")
		return err
	case st.Metrics.Error != "":
		_, err := fmt.Fprintf(w, "\nThe CCM's metrics at %s could not be read: %s\n", st.Metrics.URL, st.Metrics.Error)
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

func list(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ",")
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
