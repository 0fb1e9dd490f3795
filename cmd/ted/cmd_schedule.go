package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"ted/schedule"
)

type scheduleCheckOptions struct {
	at   string
	next int
}

func newScheduleCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "schedule", Short: "Check schedule files"}
	cmd.AddCommand(newScheduleCheckCommand(g))
	return cmd
}

func newScheduleCheckCommand(g *globalOptions) *cobra.Command {
	var opts scheduleCheckOptions
	cmd := &cobra.Command{
		Use:   "check FILE [--at RFC3339] [--next N]",
		Short: "Validate a schedule file and list the next windows of each schedule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScheduleCheck(opts, args[0], g.json, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.at, "at", "", "list windows from this time (RFC 3339; default now)")
	cmd.Flags().IntVar(&opts.next, "next", 5, "how many windows to list per schedule")
	addJSONFlag(cmd, g)
	return cmd
}

// scheduleCheckResult is what `schedule check --json` prints.
type scheduleCheckResult struct {
	Schedules []scheduleListing `json:"schedules"`
}

type scheduleListing struct {
	Name    string          `json:"name"`
	OpenNow bool            `json:"open_now"`
	Windows []windowListing `json:"windows"`
	Jitter  string          `json:"jitter,omitempty"`
	MaxRate int64           `json:"max_rate,omitempty"`
	Zone    string          `json:"timezone"`
}

type windowListing struct {
	// Start is when the window opens; for one open since before anything
	// can tell (always), the time asked about.
	Start string `json:"start"`
	// End is empty for a window that never closes.
	End string `json:"end"`
}

func runScheduleCheck(opts scheduleCheckOptions, file string, asJSON bool, w io.Writer) error {
	at := time.Now()
	if opts.at != "" {
		t, err := time.Parse(time.RFC3339, opts.at)
		if err != nil {
			return usageError{fmt.Errorf("--at %q: want RFC 3339, like 2026-11-23T22:00:00Z", opts.at)}
		}
		at = t
	}
	if opts.next < 1 {
		return usageError{fmt.Errorf("--next %d: want at least 1", opts.next)}
	}
	f, err := schedule.Load(file)
	if errors.Is(err, schedule.ErrInvalid) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	res := scheduleCheckResult{Schedules: []scheduleListing{}}
	for _, name := range f.Names() {
		s, err := f.Lookup(name)
		if err != nil {
			return err
		}
		l := scheduleListing{Name: name, OpenNow: s.OpenAt(at), Windows: []windowListing{}, MaxRate: s.MaxRate, Zone: s.Location.String()}
		if s.Jitter > 0 {
			l.Jitter = s.Jitter.String()
		}
		for _, win := range s.Windows(at, opts.next) {
			start := win.Start
			if start.IsZero() {
				start = at
			}
			wl := windowListing{Start: start.UTC().Format(time.RFC3339)}
			if !win.Forever() {
				wl.End = win.End.UTC().Format(time.RFC3339)
			}
			l.Windows = append(l.Windows, wl)
		}
		res.Schedules = append(res.Schedules, l)
	}
	return printResult(w, asJSON, res, func(p *printer) {
		p.linef("%s: %d schedules, valid; windows from %s", file, len(res.Schedules), at.UTC().Format(time.RFC3339))
		for _, s := range res.Schedules {
			state := "closed"
			if s.OpenNow {
				state = "open"
			}
			extra := ""
			if s.Jitter != "" {
				extra += ", jitter " + s.Jitter
			}
			if s.MaxRate > 0 {
				extra += ", max " + humanBytes(s.MaxRate) + "/s"
			}
			p.linef("")
			p.linef("%s (%s%s): %s", s.Name, s.Zone, extra, state)
			if len(s.Windows) == 0 {
				p.linef("  no window opens")
			}
			for _, win := range s.Windows {
				start, end := win.Start, win.End
				if end == "" {
					end = "(never closes)"
				}
				p.linef("  %s -> %s", start, end)
			}
		}
	})
}
