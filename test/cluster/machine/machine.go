// Package machine runs a "machine" of the real-cluster rig: the network
// namespace of a netrig host plus a process that is PID 1 of its own PID,
// mount and UTS namespaces, with its own root filesystem and cgroup, and
// long-running services (containerd, the kubelet) it supervises like an init
// system. Every process of the machine, containers included, lives in its
// PID namespace, so stopping the init stops the whole machine.
//
// The root filesystem is an overlay: the host's / read-only below a tmpfs,
// so that what the machine writes (kubeadm's /etc/kubernetes, the kubelet's
// hostPath folders, /etc/cni/net.d) never reaches the host. Folders that
// hold much or must be read from the host (containerd's content store, the
// kubelet's pods, logs, /etc/kubernetes) are bind mounts of folders under
// Spec.Dir instead. The machine gets fresh /proc, /sys (of its network
// namespace), /run and /tmp; /dev and the cgroup hierarchies are the
// host's.
//
// Start runs the init; Attach finds a running one from its folder, from
// any process; Machine.Command runs a program inside (nsenter); Stop stops
// it and removes its cgroups. The package needs root.
package machine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

// initArg0 is the argv[0] under which this package's own binary re-executes
// itself as a machine's init (see init.go).
const initArg0 = "ironlb-machine-init"

// Spec describes a machine.
type Spec struct {
	// Name is the machine's hostname: 1-63 lowercase letters, digits and
	// dashes.
	Name string `json:"name"`
	// NetNS is the network namespace (one of `ip netns list`) it lives in.
	NetNS string `json:"netns"`
	// Dir is the machine's folder on the host, an absolute path: its
	// persistent folders (fs/), logs and bookkeeping.
	Dir string `json:"dir"`
	// Cgroup is the machine's cgroup, the same path in every cgroup
	// hierarchy (see CgroupBase); its processes run in Cgroup/system.
	Cgroup string `json:"cgroup"`
	// Persist lists folders of the machine kept on the host's disk, under
	// Dir/fs/<folder>, instead of the overlay's tmpfs.
	Persist []string `json:"persist,omitempty"`
	// Mounts are host files or folders bound into the machine.
	Mounts []Mount `json:"mounts,omitempty"`
	// Files are written into the machine at boot (machine path → content),
	// and Dirs created.
	Files map[string]string `json:"files,omitempty"`
	Dirs  []string          `json:"dirs,omitempty"`
	// Sysctls are kernel settings the machine reads as the given values
	// (a file bound over /proc/sys/<name> inside it, dots for slashes)
	// without changing the host's: settings that are not per network
	// namespace are the host's own, shared by every machine.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// Services are started in order at boot and stopped in reverse order.
	Services []Service `json:"services,omitempty"`
}

// Mount binds a host file or folder into the machine.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Service is a program the init keeps running, in the manner of a systemd
// unit with Restart=always.
type Service struct {
	Name string `json:"name"`
	// Command is the program and its arguments. An argument "$NAME" is
	// replaced by the words of variable NAME (split on white space, as
	// systemd's ExecStart= does); "${NAME}" inside an argument by its value.
	Command []string `json:"command"`
	// Env holds NAME=value pairs; EnvFiles are read at every start, in
	// order, and override it (a missing file is skipped, as systemd's
	// EnvironmentFile=-).
	Env      []string `json:"env,omitempty"`
	EnvFiles []string `json:"envFiles,omitempty"`
	// RestartDelay is how long the init waits before starting the
	// program again after it exits (default 1 s).
	RestartDelay Duration `json:"restartDelay,omitempty"`
}

// Duration is a time.Duration that reads and writes as "1s".
type Duration time.Duration

// MarshalJSON writes d as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (s Spec) check() error {
	switch {
	case !nameRE.MatchString(s.Name):
		return fmt.Errorf("machine name %q: want a DNS label", s.Name)
	case s.NetNS == "":
		return fmt.Errorf("machine %s: no network namespace", s.Name)
	case !filepath.IsAbs(s.Dir):
		return fmt.Errorf("machine %s: folder %q is not absolute", s.Name, s.Dir)
	case !strings.HasPrefix(s.Cgroup, "/") || s.Cgroup == "/":
		return fmt.Errorf("machine %s: cgroup %q: want an absolute path below the root", s.Name, s.Cgroup)
	}
	for _, p := range s.Persist {
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
			return fmt.Errorf("machine %s: persistent folder %q: want a clean absolute path", s.Name, p)
		}
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return fmt.Errorf("machine %s: mount %s → %s: want absolute paths", s.Name, m.Source, m.Target)
		}
	}
	for p := range s.Files {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("machine %s: file %q: want an absolute path", s.Name, p)
		}
	}
	for _, p := range s.Dirs {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("machine %s: folder %q: want an absolute path", s.Name, p)
		}
	}
	seen := map[string]bool{}
	for _, sv := range s.Services {
		if !nameRE.MatchString(sv.Name) || seen[sv.Name] || len(sv.Command) == 0 {
			return fmt.Errorf("machine %s: service %q: want a unique name and a command", s.Name, sv.Name)
		}
		seen[sv.Name] = true
	}
	return nil
}

// Machine is a running machine.
type Machine struct {
	Spec Spec
	// Pid is the init's process ID on the host.
	Pid int

	done chan struct{} // closed when the init exited, if this process started it
}

func specPath(dir string) string { return filepath.Join(dir, "machine.json") }
func pidPath(dir string) string  { return filepath.Join(dir, "init.pid") }

// logDir is where a machine's services log, inside it: Spec.Dir/log on
// the host.
const logDir = "/var/log/machine"

// LogPath is the host path of a service's log (its stdout and stderr).
func (m *Machine) LogPath(service string) string {
	return filepath.Join(m.Spec.Dir, "log", service+".log")
}

// HostPath is where the persistent machine folder p (one of Spec.Persist, or
// a path below one) lies on the host.
func (m *Machine) HostPath(p string) string { return filepath.Join(m.Spec.Dir, "fs", p) }

// Start boots the machine: it writes the spec into spec.Dir and starts this
// program again as the machine's init, in new PID, mount and UTS namespaces
// inside spec.NetNS, and waits until the init has pivoted into its root and
// started its services (or failed). The init outlives the calling process;
// Stop ends it.
func Start(spec Spec) (*Machine, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(spec.Dir, "log"), 0o755); err != nil {
		return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(specPath(spec.Dir), b, 0o644); err != nil {
		return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
	}
	log, err := os.OpenFile(filepath.Join(spec.Dir, "log", "init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", spec.Name, err)
	}
	defer log.Close()
	// The init tells it is up by closing its end of this pipe after
	// writing "ok" or the error that stopped it.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path:       self,
		Args:       []string{initArg0, specPath(spec.Dir)},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Stdout:     log,
		Stderr:     log,
		ExtraFiles: []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
			Setsid:     true,
		},
	}
	// Forked from a thread inside the network namespace, the init is born
	// there.
	err = netrig.Do(spec.NetNS, cmd.Start)
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("machine %s: starting its init: %w", spec.Name, err)
	}
	m := &Machine{Spec: spec, Pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(m.done) }()
	if err := os.WriteFile(pidPath(spec.Dir), []byte(strconv.Itoa(m.Pid)+"\n"), 0o644); err != nil {
		_ = m.Stop(0)
		return nil, err
	}
	// The first line the init writes: "ok" or why it failed (nothing if it
	// died).
	status := make(chan []byte, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadBytes('\n')
		status <- line
	}()
	select {
	case b := <-status:
		if s := strings.TrimSpace(string(b)); s != "ok" {
			_ = m.Stop(0)
			if s == "" {
				s = "it exited: " + tail(filepath.Join(spec.Dir, "log", "init.log"))
			}
			return nil, fmt.Errorf("machine %s: boot: %s", spec.Name, s)
		}
	case <-time.After(30 * time.Second):
		_ = m.Stop(0)
		return nil, fmt.Errorf("machine %s: boot took more than 30 s", spec.Name)
	}
	return m, nil
}

// tail returns the last lines of a file, for errors.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// Attach returns the machine whose folder is dir, if its init still runs.
func Attach(dir string) (*Machine, error) {
	b, err := os.ReadFile(specPath(dir))
	if err != nil {
		return nil, fmt.Errorf("no machine in %s: %w", dir, err)
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("machine in %s: %w", dir, err)
	}
	pid, err := readPid(dir)
	if err != nil {
		return nil, err
	}
	if !isInit(pid, dir) {
		return nil, fmt.Errorf("machine %s is not running", spec.Name)
	}
	return &Machine{Spec: spec, Pid: pid}, nil
}

func readPid(dir string) (int, error) {
	b, err := os.ReadFile(pidPath(dir))
	if err != nil {
		return 0, fmt.Errorf("machine in %s: %w", dir, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("machine in %s: bad pid file %q", dir, b)
	}
	return pid, nil
}

// isInit reports whether pid is the init of the machine in dir (and not a
// process that got its number since).
func isInit(pid int, dir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	return len(args) == 2 && args[0] == initArg0 && args[1] == specPath(dir)
}

// Running reports whether the machine's init still runs.
func (m *Machine) Running() bool {
	if m.done != nil {
		select {
		case <-m.done:
			return false
		default:
			return true
		}
	}
	return isInit(m.Pid, m.Spec.Dir)
}

// Command returns a command that runs args inside the machine, in all its
// namespaces and root, as root, with a clean environment (PATH, HOME and
// env).
func (m *Machine) Command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	nsenter := []string{"--target", strconv.Itoa(m.Pid), "--mount", "--uts", "--net", "--pid", "--root", "--wd", "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	nsenter = append(nsenter, env...)
	return exec.CommandContext(ctx, "nsenter", append(nsenter, args...)...)
}

// Run runs args inside the machine and returns their combined output; the
// error names the command and holds its output.
func (m *Machine) Run(ctx context.Context, args ...string) (string, error) {
	out, err := m.Command(ctx, nil, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("on %s: %s: %w: %s", m.Spec.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Stop stops the machine: SIGTERM to its init, which stops its services
// in reverse order; after grace (or at once if grace is 0) SIGKILL, which
// kills every process of its PID namespace. Then it removes the machine's
// cgroups. The machine's folder stays (Remove deletes it).
func (m *Machine) Stop(grace time.Duration) error {
	if m.Running() {
		sig := unix.SIGTERM
		if grace == 0 {
			sig = unix.SIGKILL
		}
		if err := unix.Kill(m.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("machine %s: %w", m.Spec.Name, err)
		}
		if !m.wait(grace) {
			_ = unix.Kill(m.Pid, unix.SIGKILL)
			if !m.wait(10 * time.Second) {
				return fmt.Errorf("machine %s: init %d survived SIGKILL", m.Spec.Name, m.Pid)
			}
		}
	}
	return removeCgroup(m.Spec.Cgroup)
}

// wait waits up to d for the init to exit.
func (m *Machine) wait(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !m.Running() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Remove deletes the machine's folder; the machine must be stopped.
func (m *Machine) Remove() error {
	if m.Running() {
		return fmt.Errorf("machine %s: still running", m.Spec.Name)
	}
	return os.RemoveAll(m.Spec.Dir)
}

// Clean stops the machine whose folder is dir if it runs, and removes its
// cgroups either way (a machine killed from outside leaves them). A folder
// without a machine is left alone.
func Clean(dir string) error {
	if m, err := Attach(dir); err == nil {
		return m.Stop(10 * time.Second)
	}
	b, err := os.ReadFile(specPath(dir))
	if err != nil {
		return nil
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil || spec.Cgroup == "" {
		return nil
	}
	return removeCgroup(spec.Cgroup)
}
