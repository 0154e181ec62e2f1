package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/ironlb/ironlb/test/chaos"
)

// benchChaos runs the full chaos suite (make chaos) and prints its figures;
// a broken invariant fails the run.
func benchChaos(ctx context.Context, _ int) error {
	cfg := chaos.Full()
	cfg.LogDir = os.Getenv("IRONLB_CHAOS_LOGDIR")
	cfg.CCMArgs = strings.Fields(os.Getenv("IRONLB_CHAOS_CCM_ARGS"))
	f, err := chaos.Run(ctx, cfg)
	f.Print(os.Stdout)
	if err != nil {
		return err
	}
	if v := f.Violations(); len(v) > 0 {
		return fmt.Errorf("invariants broken: %s", strings.Join(v, "; "))
	}
	return nil
}
