//go:build linux

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestDependencyOrder is the case operators know from older tools: app
// requires runtime; app arrives first and waits, blocked with a reason
// naming runtime; runtime arrives; both are extracted, runtime first.
func TestDependencyOrder(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	dist1 := nw.distributor("dist-1", distributorSpec{channels: map[string]channel{
		"web": {publishers: []string{"pub-1"}, children: []string{"web-01"}},
	}})
	web1 := nw.subscriber("web-01", subscriberSpec{parents: []string{dist1.addr}})

	nw.build("1.0.0", "--requires", "runtime >=2.0, <3")
	nw.publish("app", dist1)
	waitFor(t, "app@1 blocked, naming runtime", func() (bool, string) {
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		r, _ := st.distState("app", 1)
		return r.State == "blocked" && strings.Contains(r.Reason, "runtime") && strings.Contains(r.Reason, "not yet received"), fmt.Sprintf("%+v", r)
	})
	requireNothingExtracted(t, web1)

	nw.build("2.1.0", "--name", "runtime")
	nw.publish("runtime", dist1)
	waitFor(t, "runtime@1 and app@1 extracted", func() (bool, string) {
		st, err := web1.subscriberStatus()
		if err != nil {
			return false, err.Error()
		}
		rt, _ := st.distState("runtime", 1)
		app, _ := st.distState("app", 1)
		return rt.State == "extracted" && app.State == "extracted", fmt.Sprintf("runtime %+v, app %+v", rt, app)
	})
	requireTree(t, filepath.Join(web1.root, "app"), nw.src)
	requireTree(t, filepath.Join(web1.root, "runtime"), nw.src)
	// runtime went in before app, in the same run.
	log := web1.runLog()
	rt, app := strings.Index(log, "dist=runtime rev=1 target=runtime"), strings.Index(log, "dist=app rev=1 target=app")
	if rt < 0 || app < 0 || rt > app {
		t.Errorf("extraction order in web-01's log: runtime at %d, app at %d; want runtime first", rt, app)
	}
}
