package machine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// enterRoot builds the machine's root filesystem under spec.Dir/root and
// pivots into it (see the package comment). It runs in the init, in the
// machine's fresh mount namespace, before anything else is started there.
func enterRoot(spec Spec) error {
	// Nothing done here may reach the host's mount table.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	scratch := filepath.Join(spec.Dir, "overlay")
	root := filepath.Join(spec.Dir, "root")
	for _, d := range []string{scratch, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The overlay's upper layer is a tmpfs: an upper folder on the host's
	// own file system would lie inside the lower layer (/), which overlayfs
	// refuses.
	if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("tmpfs for the overlay: %w", err)
	}
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(scratch, d), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", scratch, scratch)
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay root: %w", err)
	}
	in := func(p string) string { return filepath.Join(root, p) }

	// Fresh kernel file systems: /proc of the PID namespace, /sys of the
	// network namespace (its /sys/class/net), the host's cgroup
	// hierarchies and devices.
	mounts := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"proc", in("/proc"), "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", in("/sys"), "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"/sys/fs/cgroup", in("/sys/fs/cgroup"), "", unix.MS_BIND | unix.MS_REC, ""},
		{"/dev", in("/dev"), "", unix.MS_BIND | unix.MS_REC, ""},
		{"shm", in("/dev/shm"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", in("/run"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"},
		{"tmpfs", in("/tmp"), "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.src, m.target, err)
		}
	}
	for name, value := range spec.Sysctls {
		f := filepath.Join(scratch, "sysctl-"+name)
		if err := os.WriteFile(f, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		target := in("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err := unix.Mount(f, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("sysctl %s: %w", name, err)
		}
	}
	for _, p := range spec.Persist {
		host := filepath.Join(spec.Dir, "fs", p)
		if err := os.MkdirAll(host, 0o755); err != nil {
			return err
		}
		if err := bind(host, in(p), false); err != nil {
			return err
		}
	}
	// The services' logs, readable from the host (Machine.LogPath).
	if err := bind(filepath.Join(spec.Dir, "log"), in(logDir), false); err != nil {
		return err
	}
	for _, m := range spec.Mounts {
		if err := bind(m.Source, in(m.Target), m.ReadOnly); err != nil {
			return err
		}
	}
	for _, p := range spec.Dirs {
		if err := os.MkdirAll(in(p), 0o755); err != nil {
			return err
		}
	}
	for p, content := range spec.Files {
		if err := os.MkdirAll(filepath.Dir(in(p)), 0o755); err != nil {
			return err
		}
		// Remove first: the file may be a symlink in the lower layer
		// (/etc/resolv.conf), which WriteFile would follow to the host.
		if err := os.Remove(in(p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := os.WriteFile(in(p), []byte(content), 0o644); err != nil {
			return err
		}
	}

	old := in("/.oldroot")
	if err := os.MkdirAll(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(root, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.oldroot", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return os.Remove("/.oldroot")
}

// bind bind-mounts source (a file or a folder) on target, creating target
// like source, read-only if asked.
func bind(source, target string, readOnly bool) error {
	st, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	if st.IsDir() {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if _, err := os.Lstat(target); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(target, nil, 0o755); err != nil {
				return err
			}
		}
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", source, target, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("bind %s on %s read-only: %w", source, target, err)
		}
	}
	return nil
}
