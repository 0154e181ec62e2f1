// Package cli is the command tree of the kubectl plugin kubectl-ironlb:
// flags and exit statuses only; the work is in migrate/metallb (convert)
// status (status) and cpvip (control-plane manifest).
package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ironlb/ironlb/internal/version"
)

// Exit statuses.
const (
	ExitOK = 0
	// ExitError: the command failed (unreadable input, API unreachable).
	ExitError = 1
	// ExitPartial: convert wrote output, but some of the input has no
	// IronLB equivalent (see stderr) and --allow-partial was not given.
	ExitPartial = 2
)

// exitError carries an exit status other than ExitError.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Run runs the plugin with args (without the program name) and returns
// its exit status.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "kubectl-ironlb",
		Short:         "IronLB's kubectl plugin: migrate from MetalLB, show what IronLB does, set up the control-plane VIP",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(convertCommand(), statusCommand(), controlPlaneCommand())
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "error:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "error:", err)
	return ExitError
}
