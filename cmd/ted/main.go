// Command ted is the one TED binary: publisher CLI, distributor and
// subscriber daemons, key management and the demo. It only wires the
// packages together: flags, config files, signals and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ted/agent"
)

// Exit codes, as the command reference (docs/commands) promises them to
// scripts.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitVerify      = 3
	exitNotFound    = 4
	exitInterrupted = 130
)

// The Go runtime's soft memory limit, unless GOMEMLIMIT sets one: it
// follows the work. A transfer allocates a stream of short-lived buffers,
// and with the default GC pacing alone the heap's headroom grows with what
// is live — the manifest and per-chunk sets of the revision in flight — so
// RSS would follow the distribution's size (the budget: ≤ 256 MiB of RSS
// with a 4 GiB distribution; bench/README.md). A fixed limit keeps that
// headroom small, but a distributor's live heap grows with its sessions
// (about 10,000 children need well over 160 MiB), and a live heap above a
// fixed limit makes the collector run without pause. So the limit is
// minMemoryLimit, or what is live plus half of it again, whichever is
// more, re-read every memoryLimitEvery: small nodes keep the fixed
// budget, a large distributor collects when its garbage reaches half its
// live heap, as GOGC=50 would.
const (
	minMemoryLimit   = 160 << 20
	memoryLimitEvery = time.Second
)

// memoryLimitFor is the soft limit for a process with live bytes of live
// heap and other bytes of memory the runtime holds beside the heap
// (goroutine stacks, its own metadata), which the limit also counts.
func memoryLimitFor(live, other uint64) int64 {
	return max(minMemoryLimit, int64(min(other+live+live/2, math.MaxInt64)))
}

// memorySamples are the runtime metrics memoryLimitFor needs.
var memorySamples = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/objects:bytes",
}

// memoryNow reads the live heap, as of the last collection, and the
// memory the runtime holds beside the heap.
func memoryNow(samples []metrics.Sample) (live, other uint64) {
	metrics.Read(samples)
	var v [6]uint64
	for i, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	live, total, released, free, unused, objects := v[0], v[1], v[2], v[3], v[4], v[5]
	return live, total - min(total, released+free+unused+objects)
}

// followMemoryLimit sets the soft memory limit from the live heap now, and
// again every memoryLimitEvery until the process ends; it also hands
// memory back to the system once the process is quiet (idleRelease).
func followMemoryLimit() {
	samples := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		samples[i].Name = name
	}
	debug.SetMemoryLimit(memoryLimitFor(memoryNow(samples)))
	idle := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var r idleRelease
	go func() {
		for now := range time.Tick(memoryLimitEvery) {
			debug.SetMemoryLimit(memoryLimitFor(memoryNow(samples)))
			metrics.Read(idle)
			var v [4]uint64
			for i, s := range idle {
				if s.Value.Kind() == metrics.KindUint64 {
					v[i] = s.Value.Uint64()
				}
			}
			// What a collection would give back: the heap free now, and
			// the objects beyond those live at the last collection.
			cycles, free, objects, live := v[0], v[1], v[2], v[3]
			if r.due(now, cycles, free+objects-min(objects, live)) {
				debug.FreeOSMemory()
			}
		}
	}()
}

// After a burst — thousands of children connecting, a publish fetched by
// all of them — the runtime keeps what the burst needed: free heap up to
// the memory limit's headroom, quic-go's packet buffers in sync.Pools
// (dropped only by the second collection after their last use) and
// goroutine stacks grown by the burst (shrunk only by a collection). An
// idle process allocates little and so collects rarely, and an idle
// distributor kept the memory of its busiest moment: at 3,000 children,
// 38 MiB of pooled 20 KiB send buffers alone. So once no collection has
// run for quietFor, and a collection would give back more than
// releaseAbove (the heap free now, and the objects that were not live at
// the last collection: garbage until a collection finds it), the memory
// is handed back (debug.FreeOSMemory: a collection, then everything free
// returned to the system), and once more a quietFor later, for what the
// pools held through the first. A busy
// process collects often and is never quiet; a quiet one pays at most two
// collections per burst.
const (
	quietFor     = 30 * time.Second
	releaseAbove = 16 << 20
)

// idleRelease decides when a quiet process hands memory back.
type idleRelease struct {
	cycles uint64    // collections seen so far
	since  time.Time // when cycles last changed
	again  bool      // one more release is due after the last
}

// due reports whether memory should be handed back now, given the
// collections so far and the heap a collection would give back (free);
// it expects to be told of the collection a release runs.
func (r *idleRelease) due(now time.Time, cycles, free uint64) bool {
	if r.since.IsZero() || cycles != r.cycles {
		// A collection of the process's own (or more than the release's
		// one): busy, and what the pools held is gone with it.
		r.again = false
		r.cycles, r.since = cycles, now
		return false
	}
	if now.Sub(r.since) < quietFor {
		return false
	}
	if free <= releaseAbove && !r.again {
		return false
	}
	r.again = !r.again
	// The release's own collection would count as activity; quiet time
	// starts again from it.
	r.cycles++
	r.since = now
	return true
}

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		followMemoryLimit()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		os.Exit(exitOK)
	}
	if errors.Is(err, agent.ErrRestart) {
		if interrupted {
			// Stopped as the upgrade began: the next start goes on
			// with it.
			os.Exit(exitOK)
		}
		// An upgrade began and the daemon closed everything: the
		// launcher takes over (it runs the new version on probation).
		err = agent.Relaunch(os.Args)
	}
	var status exitStatus
	if errors.As(err, &status) {
		os.Exit(int(status)) // the agent this launcher ran said why
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
	// ted --version prints what ted version does. The template is text,
	// with any "{{" in it (a version set at link time) quoted.
	v := buildVersion()
	root.Version = v.Version
	root.SetVersionTemplate(strings.ReplaceAll(strings.Join(v.lines(), "\n")+"\n", "{{", `{{"{{"}}`))
	root.AddCommand(
		newVersionCommand(g),
		newPKICommand(g),
		newEnrollCommand(g),
		newDistCommand(g),
		newPublishCommand(g),
		newPublisherCommand(g),
		newDistributorCommand(g),
		newSubscriberCommand(g),
		newStatusCommand(g),
		newReportCommand(),
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
// name, suggesting the ones it is close to.
func markArgErrorsAsUsage(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{unknownCommand(c, args[0])}
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

// unknownCommand refuses name as a subcommand of c. Cobra suggests close
// names only for the root's subcommands, and only when the root has no
// Args of its own; this does it at every level:
//
//	unknown command "biuld" for "ted dist"; did you mean "build"?
func unknownCommand(c *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2 // cobra's default, which only its own lookup sets
	}
	if suggestions := c.SuggestionsFor(name); len(suggestions) > 0 {
		quoted := make([]string, len(suggestions))
		for i, s := range suggestions {
			quoted[i] = strconv.Quote(s)
		}
		msg += "; did you mean " + strings.Join(quoted, " or ") + "?"
	}
	return errors.New(msg)
}
