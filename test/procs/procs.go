// Package procs runs the real binaries of the test rig (etcd, kube-apiserver,
// ironlb-ccm, ironlb-speaker) as child processes whose output goes to a log
// file, and stops them for sure: SIGTERM first, SIGKILL after a grace period,
// and SIGKILL from the kernel if the test process itself dies.
package procs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a started child process.
type Process struct {
	// Name is a short name used in errors and log file names.
	Name string
	// LogPath is the file that receives the process's stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}

	mu      sync.Mutex
	waitErr error
}

// Options tunes how a process is started.
type Options struct {
	// Env is added to the current environment.
	Env []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Wrap, when set, is a command prefix the binary is started under, such
	// as []string{"ip", "netns", "exec", "node1"}.
	Wrap []string
}

// Start starts bin with args, sending its output to logPath.
func Start(name, logPath, bin string, args []string, opts Options) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating log folder for %s: %w", name, err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening log of %s: %w", name, err)
	}
	argv := append(append([]string{}, opts.Wrap...), bin)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), opts.Env...)
	// Pdeathsig kills the child if the test binary dies without cleaning up;
	// Setpgid keeps a Ctrl-C in the terminal from reaching children before
	// the owner stops them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode returns the exit code after exit; -1 when killed by a signal or
// still running.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Err returns what waiting for the process returned, once it has exited.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s has already exited", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still running after %s", p.Name, p.Pid(), timeout)
	}
}

// Stop sends SIGTERM, waits up to grace for the exit and then kills the
// process. It returns an error only if the process could not be reaped.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.Wait(grace) == nil {
		return nil
	}
	return p.Kill()
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.Name, err)
	}
	return p.Wait(10 * time.Second)
}

// Log returns the whole log written so far.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string {
	return Tail(p.Log(), n)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitForLog waits up to timeout until the log contains substr.
func (p *Process) WaitForLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.LogContains(substr) {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited (%v) before logging %q; last lines:\n%s", p.Name, p.Err(), substr, p.Tail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %s; last lines:\n%s", p.Name, substr, timeout, p.Tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LogContains reports whether the log holds substr.
func (p *Process) LogContains(substr string) bool {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return err == nil && bytes.Contains(b, []byte(substr))
}
