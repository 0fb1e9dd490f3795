package distributor

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/fleet"
	"ted/transport"
)

// FleetFile is the table of the subtree as last saved in DataDir, so that
// nodes that do not come back after a restart stay in the view (stale).
const FleetFile = "fleet.json"

// savedFleet is FleetFile's content.
type savedFleet struct {
	Saved time.Time         `json:"saved"`
	Nodes []fleet.SavedNode `json:"nodes"`
}

// newFleet makes the table of the subtree, with what was saved before.
func (d *Distributor) newFleet() *fleet.Table {
	cfg := fleet.Config{Self: d.cfg.Name, StaleAfter: d.cfg.Fleet.StaleAfter, ForgetAfter: d.cfg.Fleet.ForgetAfter, Now: d.cfg.Clock.Now}
	if h := d.cfg.Fleet.History; h != nil {
		cfg.Events = h.Add
	}
	t := fleet.New(cfg)
	if d.cfg.DataDir == "" {
		return t
	}
	b, err := os.ReadFile(filepath.Join(d.cfg.DataDir, FleetFile))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Warn("fleet: the saved view of the subtree is not read; it is rebuilt as children report", "err", err)
		}
		return t
	}
	var saved savedFleet
	if err := json.Unmarshal(b, &saved); err != nil {
		d.log.Warn("fleet: the saved view of the subtree is damaged; it is rebuilt as children report", "file", filepath.Join(d.cfg.DataDir, FleetFile), "err", err)
		return t
	}
	t.Restore(saved.Nodes, saved.Saved)
	return t
}

// saveFleet writes the table to FleetFile (atomically).
func (d *Distributor) saveFleet() error {
	b, err := json.Marshal(savedFleet{Saved: d.cfg.Clock.Now(), Nodes: d.fleet.Save()})
	if err != nil {
		return err
	}
	name := filepath.Join(d.cfg.DataDir, FleetFile)
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// fleetLoop keeps the table and the history: the history flushed every
// second, stale and forgotten nodes swept, the table saved every minute
// when it changed and once more at the end.
func (d *Distributor) fleetLoop(ctx context.Context) {
	sweepEvery := min(5*time.Second, d.cfg.Fleet.StaleAfter/4)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSweep, lastSave time.Time
	var savedAt uint64
	save := func() {
		if d.cfg.DataDir == "" {
			return
		}
		_, _, _, at, _, _ := d.fleet.Changes(^uint64(0))
		if at == savedAt {
			return
		}
		if err := d.saveFleet(); err != nil {
			d.log.Warn("fleet: the view of the subtree is not saved", "err", err)
			return
		}
		savedAt = at
	}
	defer save()
	for {
		select {
		case <-ctx.Done():
			if h := d.cfg.Fleet.History; h != nil {
				_ = h.Flush()
			}
			return
		case <-tick.C:
		}
		now := time.Now()
		if now.Sub(lastSweep) >= sweepEvery {
			d.fleet.Sweep()
			lastSweep = now
		}
		if h := d.cfg.Fleet.History; h != nil {
			_ = h.Flush() // a failure is logged there, once
		}
		if now.Sub(lastSave) >= time.Minute {
			save()
			lastSave = now
		}
	}
}

// childNode is a direct child's record in the table, from what its
// session told; d.mu is held.
func (d *Distributor) childNode(st *ChildStatus, connected bool) transport.NodeState {
	n := transport.NodeState{Name: st.Name, Role: st.Role, ActiveNode: st.ActiveNode, Agent: st.Agent, Channels: st.Channels,
		Connected: connected, Problem: st.Problem, Revisions: st.Revisions}
	if !connected {
		n.LastSeen = st.Since.UnixMilli()
	}
	return n
}

// reportSubtree reports the table to the parent on control: the whole of
// it first, then the changes, at most every ReportEvery, and a summary
// when nothing changed for SummaryEvery. Every problemEvery it also looks
// whether this node's own problem changed, and sends its status if so: a
// disk that fills changes no revision.
func (d *Distributor) reportSubtree(ctx context.Context, sess transport.Session, control *transport.Conn) error {
	var at uint64
	lastSent := time.Now()
	problem := d.problem()
	look := time.NewTicker(problemEvery)
	defer look.Stop()
	for {
		changed := d.fleet.Changed()
		nodes, gone, full, now, count, digest := d.fleet.Changes(at)
		if full || len(nodes) > 0 || len(gone) > 0 || time.Since(lastSent) >= d.cfg.Fleet.SummaryEvery {
			if err := d.sendSubtree(control, nodes, gone, full, count, digest); err != nil {
				return err
			}
			at, lastSent = now, time.Now()
		}
		// At most one report per ReportEvery: what changes meanwhile
		// travels in the next.
		pause := time.NewTimer(d.cfg.Fleet.ReportEvery)
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil
		case <-pause.C:
		}
		summary := time.NewTimer(d.cfg.Fleet.SummaryEvery - time.Since(lastSent))
	wait:
		for {
			select {
			case <-ctx.Done():
				summary.Stop()
				return nil
			case <-changed:
				break wait
			case <-summary.C:
				break wait
			case <-look.C:
				if p := d.problem(); p != problem {
					problem = p
					if err := control.Send(d.statusFor(sess)); err != nil {
						summary.Stop()
						return err
					}
				}
			case <-d.reportNow:
				if err := control.Send(d.statusFor(sess)); err != nil {
					summary.Stop()
					return err
				}
			}
		}
		summary.Stop()
	}
}

// problemEvery is how often a distributor looks whether its own problem
// changed, to tell its parent.
const problemEvery = 30 * time.Second

// problem is what this node's health check says, "" when healthy; cut
// to 1 KiB, well inside what a status may carry.
func (d *Distributor) problem() string {
	err := d.Health()
	if err == nil {
		return ""
	}
	p := err.Error()
	if len(p) > 1024 {
		p = strings.ToValidUTF8(p[:1024], "") + "…"
	}
	return p
}

// sendSubtree sends one report, in as many messages as it takes: at most
// MaxSubtreeNodes nodes and about MaxSubtreeBytes each.
func (d *Distributor) sendSubtree(control *transport.Conn, nodes []transport.NodeState, gone []string, full bool, count int, digest uint64) error {
	for first := true; first || len(nodes) > 0 || len(gone) > 0; first = false {
		m := &transport.Subtree{Full: full && first, Count: count, Digest: digest}
		n, size := 0, 0
		for n < len(nodes) && n < transport.MaxSubtreeNodes {
			size += transport.NodeSize(&nodes[n])
			if n > 0 && size > transport.MaxSubtreeBytes {
				break
			}
			n++
		}
		m.Nodes, nodes = nodes[:n], nodes[n:]
		g := min(len(gone), transport.MaxSubtreeNodes)
		m.Gone, gone = gone[:g], gone[g:]
		m.More = len(nodes) > 0 || len(gone) > 0
		p, err := transport.Prepare(m)
		if err != nil {
			return err
		}
		if err := control.Send(p); err != nil {
			return err
		}
		d.fleetMetrics.reportBytes.Add(float64(p.Size()))
		d.fleetMetrics.reports.Inc()
	}
	return nil
}

// FleetView is the subtree as `ted status` and the console show it.
func (d *Distributor) FleetView(f fleet.Filter) fleet.View {
	v, _ := d.fleetView(f)
	return v
}

// fleetView is FleetView and the catalog it was made with.
func (d *Distributor) fleetView(f fleet.Filter) (fleet.View, []fleet.Catalog) {
	self := fleet.FromState(d.selfNode(), d.cfg.Clock.Now())
	catalog := d.catalog()
	v := d.fleet.View(self, catalog, f)
	for i := range v.Rollouts {
		r := &v.Rollouts[i]
		for _, c := range catalog {
			if c.Name == r.Name && c.Revision == r.Revision {
				r.Wave = d.waveText(r.Name, r.Revision, c.Channels)
			}
		}
	}
	return v, catalog
}

// selfNode is this distributor's own record: what it holds and receives.
func (d *Distributor) selfNode() *transport.NodeState {
	st := d.parentStatus()
	n := &transport.NodeState{Name: d.cfg.Name, Role: "distributor", Agent: d.cfg.Agent, Connected: true, Revisions: st.Revisions, Channels: d.members().names}
	d.mu.Lock()
	if d.upstream != nil {
		n.Parent = d.upstream.Peer().Name
	}
	d.mu.Unlock()
	n.Problem = d.problem()
	return n
}

// catalog is the latest revision of each distribution held here, with
// its channels, for the rollouts' not_reporting counts.
func (d *Distributor) catalog() []fleet.Catalog {
	var out []fleet.Catalog
	names, err := d.store.Distributions()
	if err != nil {
		return nil
	}
	for _, name := range names {
		r, err := d.store.Latest(name)
		if err != nil {
			continue
		}
		out = append(out, fleet.Catalog{Name: r.Name, Revision: r.Revision, Version: r.Version, Channels: r.Channels})
	}
	return out
}

// FleetReport is `ted report`: per node what it has and since when, and
// per revision its history, from since on.
func (d *Distributor) FleetReport(since time.Time, f fleet.Filter) (fleet.Report, error) {
	v := d.FleetView(f)
	var events []fleet.Event
	if h := d.cfg.Fleet.History; h != nil {
		var err error
		events, err = h.Events(since, f.Keep(), maxReportEvents+1)
		if err != nil {
			return fleet.Report{}, err
		}
	}
	truncated := len(events) > maxReportEvents
	if truncated {
		events = events[1:]
	}
	r := fleet.MakeReport(v, since, events, f)
	r.Truncated = truncated
	return r, nil
}

// maxReportEvents bounds the events of one report (the latest are kept):
// a few hundred MB of history read whole would cost as much memory.
const maxReportEvents = 500_000

// FleetEvents are the latest events of the history (at most limit) that
// concern node (all if ""), oldest first.
func (d *Distributor) FleetEvents(since time.Time, node string, limit int) ([]fleet.Event, error) {
	h := d.cfg.Fleet.History
	if h == nil {
		return []fleet.Event{}, nil
	}
	var keep func(*fleet.Event) bool
	if node != "" {
		keep = func(ev *fleet.Event) bool { return ev.Node == node }
	}
	evs, err := h.Events(since, keep, limit)
	if evs == nil {
		evs = []fleet.Event{}
	}
	return evs, err
}

// Report sends this node's status to its parent again (ted/1.2), now:
// something it shows changed (its own build runs now).
func (d *Distributor) Report() {
	select {
	case d.reportNow <- struct{}{}:
	default:
	}
}

// ParentAgent is the ted version of the parent connected now ("" while
// none is, and at the top).
func (d *Distributor) ParentAgent() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.parentAgent
}

// Fleet is the table of the subtree.
func (d *Distributor) Fleet() *fleet.Table { return d.fleet }

// recordEvent adds an event of this node's own to the history.
func (d *Distributor) recordEvent(ev fleet.Event) {
	if h := d.cfg.Fleet.History; h != nil {
		if ev.Time.IsZero() {
			ev.Time = d.cfg.Clock.Now()
		}
		h.Add([]fleet.Event{ev})
	}
}

// refusedChild records a child refused at the handshake in the table, so
// that the view shows why it is missing: out of touch, with the refusal
// as its problem. A child connected under that name is left alone.
func (d *Distributor) refusedChild(name, role string, err error) {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, transport.ErrUnauthorized.Error()) {
		msg = msg[i+2:]
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, connected := d.children[name]; connected {
		return
	}
	d.fleet.Child(transport.NodeState{Name: name, Role: role, LastSeen: d.cfg.Clock.Now().UnixMilli(), Problem: "refused by " + d.cfg.Name + ": " + msg})
}

// fleetMetrics are the series of the subtree's view and its reports.
type fleetMetrics struct {
	reportBytes prometheus.Counter
	reports     prometheus.Counter
}

// registerFleetMetrics adds the subtree's series to reg: the report
// counters, and gauges taken from the view at each scrape, with bounded
// labels (distribution name and state; no series per node or revision).
func (d *Distributor) registerFleetMetrics(reg *prometheus.Registry) {
	d.fleetMetrics = fleetMetrics{
		reportBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_fleet_report_bytes_total", Help: "Bytes of subtree reports sent to the parent (frames, before QUIC)."}),
		reports:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_fleet_reports_total", Help: "Subtree report messages sent to the parent."}),
	}
	reg.MustRegister(d.fleetMetrics.reportBytes, d.fleetMetrics.reports, fleetCollector{d})
}

var (
	fleetNodesDesc = prometheus.NewDesc("ted_fleet_nodes", "Nodes of the subtree below this one, by role, and whether stale.", []string{"role", "stale"}, nil)
	fleetRevDesc   = prometheus.NewDesc("ted_fleet_subscribers",
		"Subscribers of the subtree by state of the latest revision of each distribution held here (not_reporting and stale included).", []string{"dist", "state"}, nil)
)

// fleetCollector makes the view's gauges at each scrape.
type fleetCollector struct{ d *Distributor }

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- fleetNodesDesc
	ch <- fleetRevDesc
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	v, catalog := c.d.fleetView(fleet.Filter{})
	type roleStale struct {
		role  string
		stale bool
	}
	counts := map[roleStale]int{}
	for _, n := range v.Nodes {
		if n.Name == v.Node {
			continue
		}
		counts[roleStale{n.Role, n.Stale}]++
	}
	for _, role := range []string{"distributor", "subscriber"} {
		for _, stale := range []bool{false, true} {
			ch <- prometheus.MustNewConstMetric(fleetNodesDesc, prometheus.GaugeValue, float64(counts[roleStale{role, stale}]), role, strconv.FormatBool(stale))
		}
	}
	latest := map[string]uint64{}
	for _, cat := range catalog {
		latest[cat.Name] = cat.Revision
	}
	for _, r := range v.Rollouts {
		if rev, ok := latest[r.Name]; !ok || rev != r.Revision {
			continue
		}
		for _, state := range fleet.States {
			ch <- prometheus.MustNewConstMetric(fleetRevDesc, prometheus.GaugeValue, float64(r.Counts[state]), r.Name, state)
		}
	}
}
