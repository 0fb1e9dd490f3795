// Command ted is the one TED binary: publisher CLI, distributor and
// subscriber daemons, key management and the demo. It only wires the
// packages together: flags, config files, signals and exit codes.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes, as CLI.md promises them to scripts.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitVerify      = 3
	exitNotFound    = 4
	exitInterrupted = 130
)

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT
// says otherwise. A transfer allocates a stream of short-lived buffers, and
// with the default GC pacing alone the heap's headroom grows with what is
// live — the manifest and per-chunk sets of the revision in flight — so
// RSS would follow the distribution's size. Near this limit the collector
// runs more often instead (DESIGN §13: ≤ 256 MiB with a 4 GiB distribution).
const defaultMemoryLimit = 160 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintf(os.Stderr, "ted: %v\n", err)
	code := exitCode(err)
	if interrupted && code == exitError {
		code = exitInterrupted
	}
	os.Exit(code)
}

// globalOptions are the flags every command has.
type globalOptions struct {
	json bool
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           "ted",
		Short:         "Tiered electronic distribution: publish, relay, receive and install software",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newVersionCommand(g),
		newPKICommand(g),
		newDistCommand(g),
		newPublishCommand(g),
		newPublisherCommand(g),
		newDistributorCommand(g),
		newSubscriberCommand(g),
		newScheduleCommand(g),
		newPackageCommand(g),
		newDemoCommand(g),
		newConfigCommand(g),
		newGendocsCommand(),
	)
	markArgErrorsAsUsage(root)
	return root
}

// markArgErrorsAsUsage makes every argument-count error and unknown
// subcommand an exit-2 usage error. A command that only groups others
// prints its help when called alone and refuses an unknown subcommand by
// name.
func markArgErrorsAsUsage(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath())}
			}
			return c.Help()
		}
	} else if validate := cmd.Args; validate != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := validate(c, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		markArgErrorsAsUsage(sub)
	}
}
