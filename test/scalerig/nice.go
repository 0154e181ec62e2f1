package scalerig

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// speakersNice is the scheduling priority of this process, which hosts
// the simulated speakers, while the CCMs and the control plane keep the
// default (0). On a real cluster every speaker has its own node's CPU;
// here hundreds share two cores with the CCM and the API server, and a
// starved speakers' process looks like hundreds of nodes going silent at
// once. At a higher priority the speakers answer as separate machines
// would, and the CCM (whose watchdog does not count its own stalls) gets
// what is left.
const speakersNice = -5

// setNice sets the nice value of every thread of process pid (Linux
// schedules threads; new ones inherit their creator's).
func setNice(pid, nice int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("listing the threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil && err != unix.ESRCH {
			return fmt.Errorf("setting nice %d on thread %d of %d: %w", nice, tid, pid, err)
		}
	}
	return nil
}
