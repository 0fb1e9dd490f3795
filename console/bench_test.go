package console

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ted/fleet"
	"ted/transport"
)

// bigFleet is a table of 10,020 nodes: 20 distributors under dist-1, 500
// subscribers under each, a few blocked, failed, receiving or gone.
func bigFleet(b testing.TB) *fakeSource {
	s := &fakeSource{now: time.Now()}
	s.table = fleet.New(fleet.Config{Self: "dist-1"})
	s.catalog = []fleet.Catalog{{Name: "app", Revision: 3, Version: "1.3.0", Channels: []string{"web"}}}
	for d := range 20 {
		name := fmt.Sprintf("dist-%02d", d+2)
		s.table.Child(transport.NodeState{Name: name, Role: "distributor", Agent: "1.0.0", Connected: true,
			Revisions: []transport.RevisionState{rev("app", 3, "received")}})
		mid := fleet.New(fleet.Config{Self: name})
		for i := range 500 {
			r := rev("app", 3, "extracted")
			switch i % 50 {
			case 1:
				r.State, r.Reason = "blocked", "needs db >= 3"
			case 2:
				r.State, r.Error = "failed", "disk full"
			case 3:
				r.State, r.Chunks, r.HaveChunks = "receiving", 100, 40
			}
			n := sub(fmt.Sprintf("web-%02d-%04d", d, i), r, rev("app", 2, "superseded"))
			if i%100 == 4 {
				n.Connected, n.LastSeen = false, time.Now().Add(-time.Hour).UnixMilli()
			}
			mid.Child(n)
		}
		relayAll(b, mid, s.table, name)
	}
	return s
}

func benchPage(b *testing.B, target string) {
	c := newConsole(bigFleet(b), quiet(), testOptions())
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	if w.Code != http.StatusOK {
		b.Fatalf("%s: %d", target, w.Code)
	}
	size, rows := w.Body.Len(), strings.Count(w.Body.String(), "<tr ")
	for b.Loop() {
		w := httptest.NewRecorder()
		c.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	}
	b.ReportMetric(float64(size), "page-bytes")
	b.ReportMetric(float64(rows), "rows")
}

// BenchmarkTree10k is /tree of 10,020 nodes: by default (subscribers
// folded into a row of counts per distributor) and whole (?all=1). Both
// include taking the view.
func BenchmarkTree10k(b *testing.B) {
	b.Run("collapsed", func(b *testing.B) { benchPage(b, "/tree") })
	b.Run("all", func(b *testing.B) { benchPage(b, "/tree?all=1") })
	b.Run("node-page-500-children", func(b *testing.B) { benchPage(b, "/nodes/dist-02") })
}

// BenchmarkOverview10k is / of the same fleet.
func BenchmarkOverview10k(b *testing.B) { benchPage(b, "/") }

// BenchmarkView10k is the view alone, what every page starts with.
func BenchmarkView10k(b *testing.B) {
	s := bigFleet(b)
	for b.Loop() {
		s.FleetView(fleet.Filter{})
	}
}
