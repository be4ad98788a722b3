// Command kvmm is a KVM virtual machine monitor.
package main

import (
	"os"

	"github.com/kvmm/kvmm/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
