package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/netrig"
)

// TestDemo runs `make demo ONCE=1` from the repository root with a clean
// environment, then a second
// time stopped by Ctrl-C while it waits, and checks after each run that it
// passed and left nothing behind: no network namespace, process, work
// folder or mount.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the whole demo")
	}
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root")
	}
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("once", func(t *testing.T) { runDemo(t, root, false) })
	t.Run("second run stopped with Ctrl-C", func(t *testing.T) { runDemo(t, root, true) })
}

var startRE = regexp.MustCompile(`IronLB demo \(pid (\d+), work folder (\S+)\)`)

// demoProcNames are the binaries the demo runs.
var demoProcNames = []string{"ironlb-ccm", "ironlb-speaker", "kube-apiserver", "etcd"}

func runDemo(t *testing.T, root string, interrupt bool) {
	before := snapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The README's command itself; the interrupted run uses go run so that
	// Ctrl-C reaches the demo the way it does in a terminal.
	name, args := "make", []string{"demo", "ONCE=1"}
	if interrupt {
		name, args = "go", []string{"run", "./test/demo"}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = cleanEnv()
	out := &syncBuffer{}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		demoPid int
		workDir string
	)
	// On timeout, ask the demo to clean up (SIGTERM), then kill go run.
	cmd.Cancel = func() error {
		mu.Lock()
		defer mu.Unlock()
		if demoPid > 0 {
			return syscall.Kill(demoPid, syscall.SIGTERM)
		}
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = time.Minute
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(out, line)
			if m := startRE.FindStringSubmatch(line); m != nil {
				mu.Lock()
				demoPid, _ = strconv.Atoi(m[1])
				workDir = m[2]
				mu.Unlock()
			}
			if strings.Contains(line, "until you press Ctrl-C") && !closed {
				close(waiting)
				closed = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	if interrupt {
		select {
		case <-waiting:
			time.Sleep(time.Second) // the hints are printed; the demo now waits
			mu.Lock()
			pid := demoPid
			mu.Unlock()
			if pid == 0 {
				t.Fatalf("the demo did not print its pid:\n%s", out)
			}
			if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
				t.Fatalf("sending SIGINT to the demo (pid %d): %v", pid, err)
			}
		case <-readDone:
		case <-ctx.Done():
		}
	}
	<-readDone
	err = cmd.Wait()
	t.Logf("demo output (%.1fs):\n%s", time.Since(start).Seconds(), out)
	if err != nil {
		t.Errorf("the demo failed: %v", err)
	}
	output := out.String()
	for _, want := range []string{"all three VIPs answered", "one VIP, every node serving it (ECMP)", "after its link went down (BFD 300ms × 3", "Cleaning up: processes, network namespaces, control plane, work folder ... ok"} {
		if !strings.Contains(output, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if interrupt && !strings.Contains(output, "Ctrl-C: stopping.") {
		t.Errorf("the demo did not report the Ctrl-C")
	}
	mu.Lock()
	pid, dir := demoPid, workDir
	mu.Unlock()
	if pid == 0 || dir == "" {
		t.Fatalf("the demo did not print its pid and work folder")
	}
	checkLeftovers(t, before, pid, dir)
}

// state is what the demo could leave behind, seen from this process.
type state struct {
	netns  []string
	procs  map[int]string // pid -> command line, of demoProcNames
	mounts []string       // mountinfo lines about network namespaces
}

func snapshot(t *testing.T) state {
	t.Helper()
	s := state{procs: map[int]string{}}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			s.netns = append(s.netns, f[0])
		}
	}
	for pid, cmdline := range processes() {
		argv0 := strings.SplitN(cmdline, " ", 2)[0]
		if slices.Contains(demoProcNames, filepath.Base(argv0)) {
			s.procs[pid] = cmdline
		}
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, "netns") || strings.Contains(line, "ironlb-demo-") {
			s.mounts = append(s.mounts, line)
		}
	}
	return s
}

// processes returns the command lines of all processes but this one.
func processes() map[int]string {
	m := map[int]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		m[pid] = strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	return m
}

// checkLeftovers compares the state with the one before the demo. What the
// demo made is named after its pid (namespaces) or lives in its work folder
// (processes' arguments, mounts); other differences come from tests running
// alongside and are only logged.
func checkLeftovers(t *testing.T, before state, pid int, dir string) {
	t.Helper()
	after := snapshot(t)
	nsPrefix := fmt.Sprintf("%s%d-", netrig.Prefix, pid)
	for _, ns := range after.netns {
		switch {
		case strings.HasPrefix(ns, nsPrefix):
			t.Errorf("network namespace %s left behind", ns)
		case !slices.Contains(before.netns, ns):
			t.Logf("new namespace %s, not the demo's", ns)
		}
	}
	for p, cmdline := range after.procs {
		if _, ok := before.procs[p]; !ok && !strings.Contains(cmdline, dir) {
			t.Logf("new process %d, not the demo's: %s", p, cmdline)
		}
	}
	for p, cmdline := range processes() {
		if strings.Contains(cmdline, dir) || strings.Contains(cmdline, nsPrefix) {
			t.Errorf("process %d left behind: %s", p, cmdline)
		}
	}
	for _, line := range after.mounts {
		switch {
		case strings.Contains(line, dir) || strings.Contains(line, nsPrefix):
			t.Errorf("mount left behind: %s", line)
		case !slices.Contains(before.mounts, line):
			t.Logf("new mount, not the demo's: %s", line)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work folder %s left behind (stat: %v)", dir, err)
	}
}

// cleanEnv is a minimal environment, as in a fresh shell: none of the
// test's variables (IRONLB_*, KUBECONFIG, TMPDIR...) reach the demo.
func cleanEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	// Keep Go's caches where they are, should they not be the defaults.
	for _, v := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"} {
		if val, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+val)
		}
	}
	return env
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
