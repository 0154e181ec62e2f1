package machine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// CgroupBase returns the cgroup the machines of this process should live
// under: this process's cgroup in the memory hierarchy (so that their
// memory is counted where this process's is), plus "ironlb-cluster". The
// same path is used in every hierarchy, as the kubelet's cgroupRoot is.
func CgroupBase() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	base := "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				base = parts[2]
			}
		}
	}
	return filepath.Join(base, "ironlb-cluster"), sc.Err()
}

// hierarchies returns the mounted cgroup hierarchies (cgroup v1
// controllers, named ones and a v2 "unified" mount).
func hierarchies() ([]string, error) {
	ents, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join(cgroupRoot, e.Name())
		var st unix.Statfs_t
		if !e.IsDir() || unix.Statfs(p, &st) != nil {
			continue
		}
		if st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		// A pure cgroup v2 host: the root itself.
		var st unix.Statfs_t
		if unix.Statfs(cgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			out = append(out, cgroupRoot)
		}
	}
	return out, nil
}

// joinCgroup creates cg in every hierarchy (with the parent's CPUs and
// memory nodes in cpuset, which new cgroup v1 cpusets lack) and moves the
// calling process into it.
func joinCgroup(cg string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		parts := strings.Split(strings.Trim(cg, "/"), "/")
		dir := h
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					cur, _ := os.ReadFile(filepath.Join(dir, f))
					if strings.TrimSpace(string(cur)) != "" {
						continue
					}
					v, err := os.ReadFile(filepath.Join(parent, f))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return fmt.Errorf("cgroup %s: %s: %w", dir, f, err)
					}
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// removeCgroup kills whatever still runs in cg (in any hierarchy) and
// removes it with everything below it, deepest first.
func removeCgroup(cg string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	var errs []error
	for _, h := range hs {
		top := filepath.Join(h, cg)
		for {
			dirs, err := subtree(top)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					break
				}
				errs = append(errs, err)
				break
			}
			var left error
			for _, d := range dirs {
				killAll(d)
				if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
					left = fmt.Errorf("remove cgroup %s: %w", d, err)
				}
			}
			if left == nil {
				break
			}
			if time.Now().After(deadline) {
				errs = append(errs, left)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// subtree lists dir and the folders below it, deepest first.
func subtree(dir string) ([]string, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs, err
}

// killAll sends SIGKILL to every process in cgroup folder d.
func killAll(d string) {
	b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// SweepCgroups removes the machine cgroups under base left by dead
// processes: those named like netrig's namespaces, <prefix><pid>-..., whose
// pid no longer runs (their machines were killed with their maker).
func SweepCgroups(base, prefix string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	stale := map[string]bool{}
	for _, h := range hs {
		ents, err := os.ReadDir(filepath.Join(h, base))
		if err != nil {
			continue
		}
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), prefix)
			if !e.IsDir() || !ok {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid <= 0 {
				continue
			}
			if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
				stale[filepath.Join(base, e.Name())] = true
			}
		}
	}
	var errs []error
	for cg := range stale {
		errs = append(errs, removeCgroup(cg))
	}
	return errors.Join(errs...)
}
