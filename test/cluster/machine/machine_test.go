package machine

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

func TestExpandArgs(t *testing.T) {
	env := []string{"A=--x --y=1", "B=", "C=word"}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"kubelet", "$A", "$B", "--c=${C}"}, []string{"kubelet", "--x", "--y=1", "--c=word"}},
		{[]string{"$UNSET", "x"}, []string{"x"}},
		{[]string{"a${C}b", "$$HOME", "$$$$"}, []string{"awordb", "$HOME", "$$"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, expandArgs(tt.args, env)); diff != "" {
				t.Errorf("expandArgs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadEnvFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "env")
	content := "# kubeadm\nKUBELET_KUBEADM_ARGS=\"--a=1 --b=2\"\n\nX='y z'\n; comment\nY=plain\n"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"KUBELET_KUBEADM_ARGS=--a=1 --b=2", "X=y z", "Y=plain"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("readEnvFile (-want +got):\n%s", diff)
	}
	if got, err := readEnvFile("-" + filepath.Join(dir, "missing")); err != nil || got != nil {
		t.Errorf("optional missing file: %v, %v", got, err)
	}
	if _, err := readEnvFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("required missing file: no error")
	}
}

// TestMachine boots a machine in a network namespace and checks what it
// is: its own hostname, PID 1, root (writes stay inside), persistent
// folders on the host, a supervised service that comes back when killed,
// and nothing left once stopped.
func TestMachine(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces")
	}
	if err := netrig.Usable(); err != nil {
		t.Skip(err)
	}
	lan := netrig.NewLAN(t)
	h, err := lan.AddHost("m", netip.MustParsePrefix("192.0.2.50/24"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := CgroupBase()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spec := Spec{
		Name:    "test-machine",
		NetNS:   h.Name,
		Dir:     dir,
		Cgroup:  filepath.Join(base, h.Name),
		Persist: []string{"/var/lib/thing"},
		Files:   map[string]string{"/etc/ironlb-machine-test": "inside\n"},
		Sysctls: map[string]string{"kernel.panic_on_oops": "1"},
		Services: []Service{{
			Name:         "sleeper",
			Command:      []string{"sh", "-c", "echo $$$$ >> /var/lib/thing/pids; exec sleep 600"},
			RestartDelay: Duration(100 * time.Millisecond),
		}},
	}
	m, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(0) })
	ctx := context.Background()

	if out, err := m.Run(ctx, "hostname"); err != nil || strings.TrimSpace(out) != "test-machine" {
		t.Errorf("hostname: %q, %v", out, err)
	}
	if out, err := m.Run(ctx, "cat", "/proc/1/cmdline"); err != nil || !strings.HasPrefix(out, initArg0) {
		t.Errorf("PID 1 of the machine: %q, %v", out, err)
	}
	if out, err := m.Run(ctx, "ip", "-4", "-o", "addr", "show", "eth0"); err != nil || !strings.Contains(out, "192.0.2.50/24") {
		t.Errorf("network namespace: %q, %v", out, err)
	}
	if out, err := m.Run(ctx, "ls", "/sys/class/net"); err != nil || !strings.Contains(out, "eth0") {
		t.Errorf("/sys of the network namespace: %q, %v", out, err)
	}
	if out, err := m.Run(ctx, "cat", "/etc/ironlb-machine-test"); err != nil || out != "inside\n" {
		t.Errorf("file written at boot: %q, %v", out, err)
	}
	if _, err := os.Stat("/etc/ironlb-machine-test"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the machine's file reached the host: %v", err)
	}
	hostOops, err := os.ReadFile("/proc/sys/kernel/panic_on_oops")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := m.Run(ctx, "cat", "/proc/sys/kernel/panic_on_oops"); err != nil || out != "1\n" {
		t.Errorf("the machine's kernel.panic_on_oops: %q, %v", out, err)
	}
	if _, err := m.Run(ctx, "sysctl", "-w", "kernel.panic_on_oops=1"); err != nil {
		t.Error(err)
	}
	if after, _ := os.ReadFile("/proc/sys/kernel/panic_on_oops"); string(after) != string(hostOops) {
		t.Errorf("the host's kernel.panic_on_oops changed from %q to %q", hostOops, after)
	}
	if _, err := m.Run(ctx, "mkdir", "/opt/ironlb-machine-test"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat("/opt/ironlb-machine-test"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a folder made in the machine reached the host: %v", err)
	}

	// The service runs, in the machine's cgroup, and comes back when killed.
	pids := waitLines(t, filepath.Join(dir, "fs", "var", "lib", "thing", "pids"), 1)
	procs, err := os.ReadFile(filepath.Join(cgroupRoot, "pids", spec.Cgroup, "system", "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(string(procs))); n != 2 { // init and sleep
		t.Errorf("cgroup %s/system holds %d processes, want 2: %q", spec.Cgroup, n, procs)
	}
	if _, err := m.Run(ctx, "kill", "-9", pids[0]); err != nil {
		t.Fatal(err)
	}
	pids = waitLines(t, filepath.Join(dir, "fs", "var", "lib", "thing", "pids"), 2)
	if pids[0] == pids[1] {
		t.Errorf("restarted service has the same pid %s", pids[0])
	}

	// Another process finds it from its folder.
	a, err := Attach(dir)
	if err != nil || a.Pid != m.Pid {
		t.Fatalf("Attach: %+v, %v", a, err)
	}

	// Stopping ends every process and removes the cgroup.
	var hostPids []int
	for _, f := range strings.Fields(string(procs)) {
		pid, _ := strconv.Atoi(f)
		hostPids = append(hostPids, pid)
	}
	if err := m.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range hostPids {
		if unix.Kill(pid, 0) == nil {
			t.Errorf("process %d survived Stop", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "pids", spec.Cgroup)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup left: %v", err)
	}
	if _, err := Attach(dir); err == nil {
		t.Error("Attach found a stopped machine")
	}
	if err := m.Remove(); err != nil {
		t.Error(err)
	}
}

// waitLines waits until path holds at least n lines and returns them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if lines := strings.Fields(string(b)); len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: fewer than %d lines after 10 s: %q", path, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
