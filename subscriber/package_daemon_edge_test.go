// Edge cases of software packages found by a second reading, each a
// test that failed before its fix.

package subscriber

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"ted/distribution"
	"ted/swpkg"
	"ted/transport"
)

// rvStorePackage builds package revision rev (app always, docs skipped
// everywhere by a file_exists prerequisite) into the daemon's store.
func rvStorePackage(t *testing.T, d *daemon, rev uint64) {
	t.Helper()
	p := swpkg.Package{Format: swpkg.PackageFormat, Name: "pkg", Version: fmt.Sprintf("1.%d.0", rev),
		Components: []swpkg.Component{
			{Name: "app", To: "opt/pkg/app"},
			{Name: "docs", To: "opt/pkg/docs", Prerequisites: []swpkg.Prerequisite{{Kind: "file_exists", Value: "/nonexistent/enable-docs"}}},
		}}
	desc, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := writeTree(t, map[string][]byte{
		"package.cbor":               desc,
		"components/app/bin":         []byte(fmt.Sprint(rev)),
		"components/docs/index.html": []byte("docs"),
	})
	m, _, err := distribution.BuildDir(context.Background(), dir, distribution.BuildOptions{
		Name: "pkg", Revision: rev, Version: p.Version, Channels: []string{"web"}, Kind: distribution.KindPackage,
		Created: time.Unix(1_700_000_000+int64(rev), 0)}, d.store)
	if err != nil {
		t.Fatal(err)
	}
	s, err := distribution.Sign(m, daemonKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.store.AddRevision(s, m); err != nil {
		t.Fatal(err)
	}
}

// After `ted subscriber rollback` brings back a partial package revision,
// its status says extracted with no reason, where the same revision shows
// "partial: skipped docs: ..." when extracted and after a restart.
func TestRollbackToPartialKeepsReason(t *testing.T) {
	d := newDaemon(t)
	rvStorePackage(t, d, 1)
	noParent := func(context.Context, string) (transport.Session, error) { return nil, errors.New("no parent") }
	s := d.start(noParent)
	r := waitState(t, s.Subscriber, "pkg", 1, StateExtracted)
	if !strings.HasPrefix(r.Reason, "partial: skipped docs") {
		t.Fatalf("pkg@1 reason %q, want partial", r.Reason)
	}
	rvStorePackage(t, d, 2)
	if err := s.ExtractNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitState(t, s.Subscriber, "pkg", 2, StateExtracted)
	if _, err := s.Rollback(context.Background(), "pkg", false); err != nil {
		t.Fatal(err)
	}
	r, _ = stateOf(s.Subscriber, "pkg", 1)
	if r.State != StateExtracted || !strings.HasPrefix(r.Reason, "partial: skipped docs") {
		t.Fatalf("pkg@1 after the rollback: state %s, reason %q; want extracted, partial: skipped docs", r.State, r.Reason)
	}
}
