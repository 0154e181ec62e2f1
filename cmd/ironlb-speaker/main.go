// Command ironlb-speaker is IronLB's node agent. It announces the virtual IPs
// the CCM assigns to its node.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ironlb/ironlb/internal/version"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("ironlb-speaker", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "ironlb-speaker", version.Version+": announcing is not implemented yet; run with --version")
	os.Exit(2)
}
