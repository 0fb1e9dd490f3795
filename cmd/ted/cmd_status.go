package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"ted/admin"
	"ted/distributor"
	"ted/fleet"
	"ted/subscriber"
)

// statusOptions are `ted status`'s flags.
type statusOptions struct {
	config string
	tree   bool
	filter fleet.Filter
	watch  bool
	every  time.Duration
}

func newStatusCommand(g *globalOptions) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status --config FILE [--tree] [--dist NAME[@REV]] [--state STATE] [--node GLOB] [--watch]",
		Short: "Show the state of the tree below a running daemon: rollouts, or nodes as a tree",
		Long: `Asks the daemon whose config file is given (a distributor's or a subscriber's) for
the state of every node below it, as every tier reports it up, and shows:

  - by default, the rollout of each revision: how many subscribers have it
    extracted, received, are receiving (with progress), are blocked (grouped by
    reason) or failed (grouped by error), say nothing of it (not_reporting) or
    are stale;
  - with --tree, the nodes as a tree: role, agent version, last seen, problem
    and what each holds.

A node is stale when it has been out of touch longer than the distributor's
fleet.stale_after (3m by default). --json prints the whole view as one document.`,
		Example: `  ted status --config /etc/ted/distributor.yaml
  ted status --config /etc/ted/distributor.yaml --dist app@3 --state failed --tree
  ted status --config /etc/ted/distributor.yaml --node 'web-*' --watch
  ted status --config /etc/ted/distributor.yaml --json | jq '.rollouts[] | {name, revision, counts}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), o, g.json, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.config, "config", "", "the daemon's config file (distributor or subscriber)")
	cmd.Flags().BoolVar(&o.tree, "tree", false, "show the nodes as a tree instead of the rollouts")
	cmd.Flags().StringVar(&o.filter.Dist, "dist", "", "only this distribution (NAME) or revision (NAME@REV)")
	cmd.Flags().StringVar(&o.filter.State, "state", "", "only nodes with a revision in this state ("+strings.Join(fleet.States, ", ")+")")
	cmd.Flags().StringVar(&o.filter.Node, "node", "", "only nodes whose name matches this glob (web-*)")
	cmd.Flags().BoolVar(&o.watch, "watch", false, "refresh in place until interrupted")
	cmd.Flags().DurationVar(&o.every, "every", 2*time.Second, "how often --watch refreshes")
	addJSONFlag(cmd, g)
	return cmd
}

func runStatus(ctx context.Context, o statusOptions, asJSON bool, w io.Writer) error {
	if err := requireFlag("config", o.config); err != nil {
		return err
	}
	if err := o.filter.Validate(); err != nil {
		return usageError{err}
	}
	if o.watch && o.every < 100*time.Millisecond {
		return usageError{fmt.Errorf("--every %v: at least 100ms", o.every)}
	}
	fetch, err := fleetSource(o.config)
	if err != nil {
		return err
	}
	return showStatus(ctx, fetch, o, asJSON, w)
}

// showStatus prints the view fetch gives, once, or with o.watch every
// o.every until ctx ends.
func showStatus(ctx context.Context, fetch func(context.Context, fleet.Filter) (fleet.View, error), o statusOptions, asJSON bool, w io.Writer) error {
	show := func() error {
		v, err := fetch(ctx, o.filter)
		if err != nil {
			return err
		}
		return printResult(w, asJSON, v, func(p *printer) {
			if o.tree {
				printTree(p, &v)
			} else {
				printRollouts(p, &v)
			}
		})
	}
	if !o.watch {
		return show()
	}
	clear := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !asJSON {
		clear = true
	}
	for {
		if clear {
			fmt.Fprint(w, "\x1b[H\x1b[2J")
		}
		if err := show(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.every):
		}
		if !clear && !asJSON {
			fmt.Fprintln(w)
		}
	}
}

// fleetSource returns how to ask the daemon of config for its view.
func fleetSource(config string) (func(context.Context, fleet.Filter) (fleet.View, error), error) {
	kind, err := configKind(config)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "distributor":
		file, err := loadDistributorConfig(config)
		if err != nil {
			return nil, err
		}
		socket := daemonSocket(file.DataDir)
		return func(ctx context.Context, f fleet.Filter) (fleet.View, error) {
			var v fleet.View
			err := admin.Get(ctx, socket, "/api/fleet?"+filterQuery(f).Encode(), &v)
			return v, err
		}, nil
	case "subscriber":
		file, err := loadSubscriberConfig(config)
		if err != nil {
			return nil, err
		}
		socket := daemonSocket(file.DataDir)
		return func(ctx context.Context, f fleet.Filter) (fleet.View, error) {
			var st subscriber.Status
			if err := admin.Get(ctx, socket, "/api/status", &st); err != nil {
				return fleet.View{}, err
			}
			return subscriberView(&st, f, time.Now()), nil
		}, nil
	}
	return nil, usageError{fmt.Errorf("%s: a %s has no tree below it: give a distributor's or a subscriber's config", config, kind)}
}

// configKind tells a config file's kind from its content.
func configKind(config string) (string, error) {
	data, err := os.ReadFile(config)
	if err != nil {
		return "", usageError{fmt.Errorf("config: %w", err)}
	}
	kind, err := guessKind(config, data)
	if err != nil {
		return "", usageError{fmt.Errorf("%s: %w", config, err)}
	}
	return kind, nil
}

// subscriberView is a subscriber's view of itself: it has no subtree.
func subscriberView(st *subscriber.Status, f fleet.Filter, now time.Time) fleet.View {
	self := fleet.Node{Name: st.Node, Parent: st.Parent, Role: "subscriber", ActiveNode: st.ActiveNode, Agent: buildVersion().Version,
		Connected: true, LastSeen: now, Problem: st.Problem, Distributions: []fleet.Dist{}}
	if self.Problem == "" {
		self.Problem = st.ParentError
	}
	for _, d := range st.Distributions {
		for _, r := range d.Revisions {
			self.Distributions = append(self.Distributions, fleet.Dist{Name: r.Name, Revision: r.Revision, Version: r.Version, State: r.State,
				Reason: r.Reason, Error: r.Error, Chunks: r.Chunks, HaveChunks: r.HaveChunks})
		}
	}
	return fleet.Build(self, nil, nil, f, now, 0)
}

func filterQuery(f fleet.Filter) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"dist": f.Dist, "state": f.State, "node": f.Node} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

func filterOf(params url.Values) (fleet.Filter, error) {
	f := fleet.Filter{Dist: params.Get("dist"), State: params.Get("state"), Node: params.Get("node")}
	if err := f.Validate(); err != nil {
		return f, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	return f, nil
}

// distributorFleetViews are a distributor's views of its subtree:
// /api/fleet, /api/report and /api/events.
func distributorFleetViews(d *distributor.Distributor) map[string]admin.Action {
	return map[string]admin.Action{
		"fleet": func(_ context.Context, params url.Values) (any, error) {
			f, err := filterOf(params)
			if err != nil {
				return nil, err
			}
			return d.FleetView(f), nil
		},
		"report": func(_ context.Context, params url.Values) (any, error) {
			f, err := filterOf(params)
			if err != nil {
				return nil, err
			}
			since, err := parseSince(params.Get("since"), time.Now())
			if err != nil {
				return nil, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
			}
			return d.FleetReport(since, f)
		},
		"events": func(_ context.Context, params url.Values) (any, error) {
			since, err := parseSince(params.Get("since"), time.Now())
			if err != nil {
				return nil, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
			}
			limit := 200
			if s := params.Get("limit"); s != "" {
				if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 100_000 {
					return nil, fmt.Errorf("%w: limit %q: want 1 to 100000", admin.ErrInvalid, s)
				}
			}
			return d.FleetEvents(since, params.Get("node"), limit)
		},
	}
}

// parseSince reads --since: a duration back from now (24h, 7d) or a time
// (RFC 3339 or YYYY-MM-DD); "" is the beginning of the history.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339, time.DateTime, time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration back from now (24h, 7d) or a time (2026-12-01, 2026-12-01T08:00:00Z)", s)
}

// printRollouts is the default view: one block per revision.
func printRollouts(p *printer, v *fleet.View) {
	printHeader(p, v)
	if len(v.Rollouts) == 0 {
		p.linef("no revisions held here or reported from below")
		return
	}
	for _, r := range v.Rollouts {
		p.linef("")
		p.linef("%s@%d %s   %d subscribers", r.Name, r.Revision, r.Version, r.Subscribers)
		if r.Wave != "" {
			p.linef("  waves: %s", r.Wave)
		}
		if r.Subscribers > 0 {
			p.linef("  %s %3d%% extracted", bar(r.Counts["extracted"], r.Subscribers, 30), 100*r.Counts["extracted"]/r.Subscribers)
		}
		var parts []string
		for _, state := range fleet.States {
			n := r.Counts[state]
			if n == 0 {
				continue
			}
			part := fmt.Sprintf("%s %d", strings.ReplaceAll(state, "_", " "), n)
			if state == "receiving" && r.Chunks > 0 {
				part += fmt.Sprintf(" (%d%% of their chunks)", 100*r.HaveChunks/r.Chunks)
			}
			parts = append(parts, part)
		}
		if len(parts) > 0 {
			p.linef("  %s", strings.Join(parts, ", "))
		}
		printGroups(p, "blocked", r.Blocked)
		printGroups(p, "failed", r.Failed)
	}
}

// printGroups prints blocked reasons or failure errors, most first.
func printGroups(p *printer, what string, groups map[string]int) {
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if groups[a] != groups[b] {
			return groups[b] - groups[a]
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		p.linef("  %s %5d  %s", what, groups[k], k)
	}
}

func bar(n, total, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("-", width) + "]"
	}
	full := n * width / total
	return "[" + strings.Repeat("#", full) + strings.Repeat("-", width-full) + "]"
}

func printHeader(p *printer, v *fleet.View) {
	var dists, subs, stale int
	for _, n := range v.Nodes {
		if n.Name == v.Node {
			continue
		}
		switch n.Role {
		case "distributor":
			dists++
		default:
			subs++
		}
		if n.Stale {
			stale++
		}
	}
	p.linef("%s (%s) at %s: %d distributors and %d subscribers below, %d stale (out of touch > %v)",
		v.Node, v.Role, v.Taken.UTC().Format(time.DateTime+" MST"), dists, subs, stale, time.Duration(v.StaleAfter))
}

// printTree prints the nodes as a tree under the answering node.
func printTree(p *printer, v *fleet.View) {
	printHeader(p, v)
	p.linef("")
	p.linef("%-36s %-11s %-14s %-16s %s", "NODE", "ROLE", "AGENT", "LAST SEEN", "REVISIONS / PROBLEM")
	for _, r := range fleet.Tree(v, -1) {
		n := r.Node
		name := r.Prefix + n.Name
		if n.ActiveNode != "" && n.ActiveNode != n.Name {
			name += " (" + n.ActiveNode + ")"
		}
		seen := "now"
		if !n.Connected {
			seen = ago(v.Taken.Sub(n.LastSeen))
			if n.Stale {
				seen += " STALE"
			}
		}
		agent := n.Agent
		if agent == "" {
			agent = "-"
		}
		what := nodeRevisions(n)
		if n.Problem != "" {
			what += "  ! " + n.Problem
		}
		p.linef("%-36s %-11s %-14s %-16s %s", name, n.Role, agent, seen, what)
	}
}

// nodeRevisions says in one line what a node holds.
func nodeRevisions(n *fleet.Node) string {
	if len(n.Distributions) == 0 {
		return "-"
	}
	var parts []string
	for _, d := range n.Distributions {
		s := fmt.Sprintf("%s@%d %s", d.Name, d.Revision, d.State)
		switch {
		case d.State == "receiving" && d.Chunks > 0:
			s += fmt.Sprintf(" %d%%", 100*d.HaveChunks/d.Chunks)
		case d.Reason != "":
			s += " (" + d.Reason + ")"
		case d.Error != "":
			s += " (" + d.Error + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// ago says how long ago, coarsely.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// reportOptions are `ted report`'s flags.
type reportOptions struct {
	config string
	since  string
	format string
	filter fleet.Filter
}

func newReportCommand() *cobra.Command {
	var o reportOptions
	cmd := &cobra.Command{
		Use:   "report --config FILE [--since 7d] [--format table|csv|json]",
		Short: "Report what every node below a distributor has and since when, and each revision's history",
		Long: `Asks the distributor whose config file is given for a report of its subtree,
from its view and its event history (data_dir/history, bounded by
fleet.history.max_age and max_bytes):

  - per node: the revisions it has, their state and since when;
  - per revision: its events in order (published, received, extracted,
    blocked, failed, rolled_back), from --since on.

--format csv prints one line per node and revision (node,role,parent,last_seen,
stale,dist,revision,version,state,since,reason), for a spreadsheet.`,
		Example: `  ted report --config /etc/ted/distributor.yaml --since 7d
  ted report --config /etc/ted/distributor.yaml --dist app --format csv > app.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReport(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.config, "config", "", "the distributor's config file")
	cmd.Flags().StringVar(&o.since, "since", "", "history from this time (2026-12-01, RFC 3339) or this long back (24h, 7d); default: all of it")
	cmd.Flags().StringVar(&o.format, "format", "table", "table, csv or json")
	cmd.Flags().StringVar(&o.filter.Dist, "dist", "", "only this distribution (NAME) or revision (NAME@REV)")
	cmd.Flags().StringVar(&o.filter.Node, "node", "", "only nodes whose name matches this glob")
	return cmd
}

func runReport(ctx context.Context, o reportOptions, w io.Writer) error {
	if err := requireFlag("config", o.config); err != nil {
		return err
	}
	if !slices.Contains([]string{"table", "csv", "json"}, o.format) {
		return usageError{fmt.Errorf("--format %q: want table, csv or json", o.format)}
	}
	if err := o.filter.Validate(); err != nil {
		return usageError{err}
	}
	if _, err := parseSince(o.since, time.Now()); err != nil {
		return usageError{err}
	}
	kind, err := configKind(o.config)
	if err != nil {
		return err
	}
	if kind != "distributor" {
		return usageError{fmt.Errorf("%s: a %s keeps no history: give a distributor's config (the top one has the whole tree's)", o.config, kind)}
	}
	file, err := loadDistributorConfig(o.config)
	if err != nil {
		return err
	}
	q := filterQuery(o.filter)
	if o.since != "" {
		q.Set("since", o.since)
	}
	var r fleet.Report
	if err := admin.Get(ctx, daemonSocket(file.DataDir), "/api/report?"+q.Encode(), &r); err != nil {
		return err
	}
	switch o.format {
	case "json":
		return printResult(w, true, r, nil)
	case "csv":
		return reportCSV(w, &r)
	}
	return printResult(w, false, r, func(p *printer) { reportTable(p, &r) })
}

func reportCSV(w io.Writer, r *fleet.Report) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"node", "role", "parent", "last_seen", "stale", "dist", "revision", "version", "state", "since", "reason"})
	for _, n := range r.Nodes {
		row := []string{n.Name, n.Role, n.Parent, n.LastSeen.UTC().Format(time.RFC3339), strconv.FormatBool(n.Stale)}
		if len(n.Distributions) == 0 {
			_ = cw.Write(append(row, "", "", "", "", "", n.Problem))
			continue
		}
		for _, d := range n.Distributions {
			since := ""
			if !d.Since.IsZero() {
				since = d.Since.UTC().Format(time.RFC3339)
			}
			reason := d.Reason
			if d.Error != "" {
				reason = d.Error
			}
			_ = cw.Write(append(slices.Clone(row), d.Name, strconv.FormatUint(d.Revision, 10), d.Version, d.State, since, reason))
		}
	}
	cw.Flush()
	return cw.Error()
}

func reportTable(p *printer, r *fleet.Report) {
	from := "the start of the history"
	if !r.Since.IsZero() {
		from = r.Since.UTC().Format(time.DateTime + " MST")
	}
	p.linef("report of %s at %s, history from %s", r.Node, r.Taken.UTC().Format(time.DateTime+" MST"), from)
	if r.Truncated {
		p.linef("(the history holds more events than a report takes: the latest are shown; narrow it with --since, --dist or --node)")
	}
	p.linef("")
	p.linef("%-28s %-11s %-24s %-12s %-12s %s", "NODE", "ROLE", "REVISION", "STATE", "SINCE", "LAST SEEN")
	for _, n := range r.Nodes {
		seen := n.LastSeen.UTC().Format(time.DateTime)
		if n.Stale {
			seen += " STALE"
		}
		if len(n.Distributions) == 0 {
			p.linef("%-28s %-11s %-24s %-12s %-12s %s", n.Name, n.Role, "-", "-", "-", seen)
		}
		for i, d := range n.Distributions {
			since := "-"
			if !d.Since.IsZero() {
				since = d.Since.UTC().Format("01-02 15:04")
			}
			name, role, last := n.Name, n.Role, seen
			if i > 0 {
				name, role, last = "", "", ""
			}
			p.linef("%-28s %-11s %-24s %-12s %-12s %s", name, role, fmt.Sprintf("%s@%d %s", d.Name, d.Revision, d.Version), d.State, since, last)
		}
	}
	for _, rev := range r.Revisions {
		p.linef("")
		p.linef("%s@%d %s: %d events", rev.Name, rev.Revision, rev.Version, len(rev.Events))
		for _, ev := range rev.Events {
			detail := ""
			if ev.Detail != "" {
				detail = "  " + ev.Detail
			}
			p.linef("  %s  %-12s %s%s", ev.Time.UTC().Format(time.DateTime), ev.Kind, ev.Node, detail)
		}
	}
}
