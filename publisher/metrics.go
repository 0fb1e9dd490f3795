package publisher

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	tedseries "ted/series"
	"ted/transport"
)

// metrics are the publisher daemon's Prometheus series.
type metrics struct {
	registry *prometheus.Registry
	// builds counts the builds by result: new (a new revision), unchanged
	// (the content was already the latest revision's), failed.
	builds *prometheus.CounterVec
	// pushes counts the pushes of a revision to the distributor by result:
	// succeeded, failed.
	pushes *prometheus.CounterVec
	// published counts the revisions the distributor took from this
	// daemon that it did not hold yet.
	published prometheus.Counter
	// offered is the plain size of the revisions pushed; sent what
	// travelled (only the chunks the distributor lacked).
	offered, sent prometheus.Counter
	sentChunks    prometheus.Counter
	lastBuild     prometheus.Gauge
	lastPush      prometheus.Gauge

	// reach is what the last dial of the distributor said.
	reach reachability
}

// newMetrics makes the series; self, if set, tells this node's own
// certificate, whose expiry is a gauge.
func newMetrics(self func() transport.Identity) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ted_publisher_builds_total",
			Help: "Builds by result: new (a new revision), unchanged (no new revision), failed."}, []string{"result"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ted_publisher_pushes_total",
			Help: "Pushes of a revision to the distributor by result: succeeded, failed."}, []string{"result"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_publisher_published_revisions_total",
			Help: "Revisions the distributor took from this daemon that it did not hold yet."}),
		offered: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_publisher_offered_bytes_total",
			Help: "Plain size of the revisions pushed to the distributor."}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_publisher_sent_bytes_total",
			Help: "Encoded chunk bytes sent to the distributor (only the chunks it lacked)."}),
		sentChunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "ted_publisher_sent_chunks_total",
			Help: "Chunks sent to the distributor."}),
		lastBuild: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ted_publisher_last_build_success_timestamp_seconds",
			Help: "When a build last succeeded (Unix time; 0 before the first)."}),
		lastPush: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ted_publisher_last_push_success_timestamp_seconds",
			Help: "When a push last succeeded, the distributor holding the revision (Unix time; 0 before the first)."}),
	}
	// Every result exported from the start, so that rate() and alerts on
	// failures find a series before the first failure.
	for _, r := range []string{"new", "unchanged", "failed"} {
		m.builds.WithLabelValues(r)
	}
	for _, r := range []string{"succeeded", "failed"} {
		m.pushes.WithLabelValues(r)
	}
	m.registry.MustRegister(m.builds, m.pushes, m.published, m.offered, m.sent, m.sentChunks, m.lastBuild, m.lastPush, &m.reach,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if self != nil {
		// The same series as the distributor's and the subscriber's.
		m.registry.MustRegister(tedseries.CertificateExpiry(func() time.Time { return self().NotAfter }))
	}
	return m
}

// reachDesc is ted_publisher_distributor_connected.
var reachDesc = prometheus.NewDesc("ted_publisher_distributor_connected",
	"1 if the last dial of the distributor succeeded (it answered and admitted this publisher), 0 if it failed; absent before the first push.", nil, nil)

// reachability is what the last dial of the distributor said; it is
// exported only once there was one.
type reachability struct {
	mu    sync.Mutex
	known bool
	ok    bool
}

func (r *reachability) set(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known, r.ok = true, ok
}

func (r *reachability) Describe(ch chan<- *prometheus.Desc) { ch <- reachDesc }

func (r *reachability) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.known {
		return
	}
	v := 0.0
	if r.ok {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(reachDesc, prometheus.GaugeValue, v)
}
