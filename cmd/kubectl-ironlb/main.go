// kubectl-ironlb is IronLB's kubectl plugin (`kubectl ironlb ...`): it
// converts MetalLB's configuration and shows IronLB's state. See cli.
package main

import (
	"os"

	"github.com/ironlb/ironlb/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
