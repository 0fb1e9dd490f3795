package subscriber

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	tedseries "ted/series"
	"ted/transport"
)

// metrics are the subscriber's Prometheus series.
type metrics struct {
	registry   *prometheus.Registry
	chunks     prometheus.Counter
	bytes      prometheus.Counter
	corrupt    prometheus.Counter
	received   prometheus.Counter
	extracted  prometheus.Counter
	failed     prometheus.Counter
	rolledBack prometheus.Counter
	refused    *prometheus.CounterVec
}

// newMetrics makes the series; self, if set, tells this node's own
// certificate, whose expiry is a gauge.
func newMetrics(self func() transport.Identity) *metrics {
	m := &metrics{
		registry:   prometheus.NewRegistry(),
		chunks:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_chunks_total", Help: "Chunks received from parents."}),
		bytes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_bytes_total", Help: "Encoded chunk bytes received from parents."}),
		corrupt:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_corrupt_chunks_total", Help: "Chunks that arrived corrupt and were fetched again."}),
		received:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_received_revisions_total", Help: "Revisions received and stored."}),
		extracted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_extracted_revisions_total", Help: "Revisions extracted and verified."}),
		failed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_failed_extractions_total", Help: "Extractions that failed."}),
		rolledBack: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_subscriber_rollbacks_total", Help: "Installations rolled back by an operator."}),
		refused:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ted_subscriber_refused_offers_total", Help: "Offers refused, by reason."}, []string{"reason"}),
	}
	m.registry.MustRegister(m.chunks, m.bytes, m.corrupt, m.received, m.extracted, m.failed, m.rolledBack, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if self != nil {
		// The same series as a distributor's: one alert rule for both.
		m.registry.MustRegister(tedseries.CertificateExpiry(func() time.Time { return self().NotAfter }))
	}
	return m
}

// revisionStates are the states ted_subscriber_revisions counts, each
// always exported (0 when none), so that an alert on one finds a series.
var revisionStates = []string{StateReceiving, StateReceived, StateExtracted, StateBlocked, StateFailed, StateRolledBack, StateSuperseded}

// revisionsDesc is ted_subscriber_revisions.
var revisionsDesc = prometheus.NewDesc("ted_subscriber_revisions",
	"Revisions known here, by state (as ted subscriber status shows them).", []string{"state"}, nil)

// stateCollector counts the revisions by state at each scrape.
type stateCollector struct{ s *Subscriber }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- revisionsDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.s.stateCounts()
	for _, state := range revisionStates {
		ch <- prometheus.MustNewConstMetric(revisionsDesc, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// stateCounts counts the revisions known here by state.
func (s *Subscriber) stateCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int{}
	for _, revs := range s.states {
		for _, st := range revs {
			counts[st.State]++
		}
	}
	return counts
}

// registerGauges adds the series computed at each scrape from the
// subscriber's state: revisions by state, the parent link, the disk.
func (s *Subscriber) registerGauges() {
	r := s.metrics.registry
	r.MustRegister(stateCollector{s},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ted_subscriber_parent_connected",
			Help: "1 while a session with a parent is up, 0 while none is.",
		}, func() float64 {
			if s.cfg.Parents.Watch.State().Addr != "" {
				return 1
			}
			return 0
		}))
	if s.cfg.DataDir != "" {
		r.MustRegister(tedseries.Disk(s.cfg.DataDir, s.cfg.MinFreeDisk)...)
	}
}
