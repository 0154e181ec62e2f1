package machine

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// When this package's binary is started as initArg0 (by Start), it becomes
// the machine's init and never returns to the program's main or tests.
func init() {
	if len(os.Args) == 2 && os.Args[0] == initArg0 {
		os.Exit(initMain(os.Args[1]))
	}
}

// initMain is PID 1 of a machine: it joins the machine's cgroup, builds and
// enters its root, reports to Start through fd 3, then supervises the
// services until SIGTERM.
func initMain(path string) int {
	// The status pipe must not leak into the services: Start reads until
	// every copy of its write end is closed.
	syscall.CloseOnExec(3)
	status := os.NewFile(3, "status")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "%s init: %v\n", time.Now().Format(time.RFC3339), err)
		if status != nil {
			fmt.Fprintf(status, "%v\n", err)
			status.Close()
		}
		return 1
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(err)
	}
	// Signals first: a SIGTERM during boot must not kill PID 1 silently
	// (PID 1 ignores signals it has no handler for).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	sigchld := make(chan os.Signal, 64)
	signal.Notify(sigchld, unix.SIGCHLD)

	if err := joinCgroup(spec.Cgroup + "/system"); err != nil {
		return fail(err)
	}
	if err := unix.Sethostname([]byte(spec.Name)); err != nil {
		return fail(fmt.Errorf("sethostname: %w", err))
	}
	if err := enterRoot(spec); err != nil {
		return fail(err)
	}
	s := newSupervisor()
	go s.reap(sigchld)
	for _, sv := range spec.Services {
		s.start(sv)
	}
	fmt.Fprintln(status, "ok")
	status.Close()
	logf("machine %s up: services %s", spec.Name, serviceNames(spec.Services))

	sig := <-sigs
	logf("%v: stopping services", sig)
	for i := len(spec.Services) - 1; i >= 0; i-- {
		s.stop(spec.Services[i].Name, 15*time.Second)
	}
	logf("stopped")
	return 0
}

func serviceNames(svcs []Service) string {
	var names []string
	for _, s := range svcs {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s init: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

// supervisor starts services, restarts them when they exit and reaps every
// process that ends up as the init's child (orphans of the machine).
type supervisor struct {
	mu      sync.Mutex
	byPid   map[int]chan syscall.WaitStatus
	running map[string]*service
}

type service struct {
	Service
	mu       sync.Mutex
	pid      int
	stopping bool
	wake     chan struct{} // closed to cut a restart delay short
	done     chan struct{} // closed when the service's loop ended
}

func newSupervisor() *supervisor {
	return &supervisor{byPid: map[int]chan syscall.WaitStatus{}, running: map[string]*service{}}
}

// reap collects every exited child; the exit of a service's process goes
// to that service's loop.
func (s *supervisor) reap(sigchld <-chan os.Signal) {
	for range sigchld {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			s.mu.Lock()
			if ch, ok := s.byPid[pid]; ok {
				ch <- ws
				delete(s.byPid, pid)
			}
			s.mu.Unlock()
		}
	}
}

func (s *supervisor) start(sv Service) {
	svc := &service{Service: sv, wake: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.running[sv.Name] = svc
	s.mu.Unlock()
	go s.loop(svc)
}

// loop runs one service until it is stopped.
func (s *supervisor) loop(svc *service) {
	defer close(svc.done)
	delay := time.Duration(svc.RestartDelay)
	if delay <= 0 {
		delay = time.Second
	}
	for {
		svc.mu.Lock()
		stopping := svc.stopping
		svc.mu.Unlock()
		if stopping {
			return
		}
		exited, err := s.spawn(svc)
		if err != nil {
			logf("%s: %v", svc.Name, err)
		} else {
			ws := <-exited
			svc.mu.Lock()
			svc.pid = 0
			stopping = svc.stopping
			svc.mu.Unlock()
			if !stopping {
				logf("%s exited (%s); restarting in %s", svc.Name, describeStatus(ws), delay)
			}
		}
		select {
		case <-time.After(delay):
		case <-svc.wake:
		}
	}
}

func describeStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

// spawn starts the service's process once; the channel gets its exit.
func (s *supervisor) spawn(svc *service) (<-chan syscall.WaitStatus, error) {
	env := append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, svc.Env...)
	for _, f := range svc.EnvFiles {
		vars, err := readEnvFile(f)
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	args := expandArgs(svc.Command, env)
	log, err := os.OpenFile(filepath.Join(logDir, svc.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	path := args[0]
	if !strings.Contains(path, "/") {
		if path, err = lookPath(path); err != nil {
			return nil, err
		}
	}
	exited := make(chan syscall.WaitStatus, 1)
	// Under the lock, so that the reaper cannot see the exit before the
	// pid is registered.
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := os.StartProcess(path, args, &os.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []*os.File{nil, log, log},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	s.byPid[p.Pid] = exited
	svc.mu.Lock()
	svc.pid = p.Pid
	svc.mu.Unlock()
	_ = p.Release()
	return exited, nil
}

func lookPath(name string) (string, error) {
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH", name)
}

// stop stops a service: no more restarts, SIGTERM to its process group,
// SIGKILL after grace.
func (s *supervisor) stop(name string, grace time.Duration) {
	s.mu.Lock()
	svc := s.running[name]
	s.mu.Unlock()
	if svc == nil {
		return
	}
	svc.mu.Lock()
	if !svc.stopping {
		svc.stopping = true
		close(svc.wake)
	}
	pid := svc.pid
	svc.mu.Unlock()
	if pid > 0 {
		_ = unix.Kill(-pid, unix.SIGTERM)
	}
	select {
	case <-svc.done:
	case <-time.After(grace):
		svc.mu.Lock()
		pid = svc.pid
		svc.mu.Unlock()
		if pid > 0 {
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
		<-svc.done
	}
}

// readEnvFile reads NAME=value lines (systemd's EnvironmentFile=: # and ;
// comments, a value in double or single quotes loses them). A path
// starting with "-" may be missing.
func readEnvFile(path string) ([]string, error) {
	optional := strings.HasPrefix(path, "-")
	path = strings.TrimPrefix(path, "-")
	b, err := os.ReadFile(path)
	if err != nil {
		if optional && os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not NAME=value", path, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, strings.TrimSpace(k)+"="+v)
	}
	return env, nil
}

// expandArgs expands variables in args as systemd's ExecStart= does: a
// whole argument "$NAME" becomes the words of NAME's value (none when it is
// empty or unset); ${NAME} inside an argument becomes its value, and "$$"
// a "$".
func expandArgs(args, env []string) []string {
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var out []string
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "$"); ok && envNameRE.MatchString(name) {
			out = append(out, strings.Fields(vars[name])...)
			continue
		}
		out = append(out, expandBraces(a, vars))
	}
	return out
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandBraces replaces ${NAME} with its value and $$ with $ in s.
func expandBraces(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
			if end := strings.IndexByte(s[i:], '}'); end > 0 {
				b.WriteString(vars[s[i+2:i+end]])
				i += end
				continue
			}
		}
		b.WriteByte('$')
	}
	return b.String()
}
