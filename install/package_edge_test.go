// Edge cases of software packages found by a second reading, each a
// test that failed before its fix.

package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ted/distribution"
)

// rvPart describes one component of a review package: its name, target and
// commands.
type rvPart struct {
	name, to        string
	pre, post, undo []string
}

// rvPublish publishes package revision rev of tree (paths relative to the
// package tree: components/NAME/..., scripts/...).
func rvPublish(t *testing.T, f *fixture, rev int, tree map[string]string) *distribution.Manifest {
	t.Helper()
	dir := tempDir(t)
	for p, content := range tree {
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		writeFile(t, filepath.Join(dir, p), []byte(content), 0o644)
	}
	return f.publishWith(dir, distribution.BuildOptions{Name: "pkg", Revision: uint64(rev),
		Version: "1." + string(rune('0'+rev)) + ".0", Target: "pkg", Kind: distribution.KindPackage})
}

func rvInstallation(t *testing.T, m *distribution.Manifest, parts []rvPart) *Installation {
	t.Helper()
	inst := &Installation{Name: m.Name, Revision: m.Revision, Version: m.Version, Kind: distribution.KindPackage}
	for _, p := range parts {
		sub, err := SubManifest(m, "components/"+p.name, p.to)
		if err != nil || sub == nil {
			t.Fatalf("component %s: %v", p.name, err)
		}
		inst.Parts = append(inst.Parts, Part{Component: p.name, M: sub, Pre: p.pre, Post: p.post, Undo: p.undo})
	}
	scripts, err := SubManifest(m, "scripts", "scripts")
	if err != nil {
		t.Fatal(err)
	}
	inst.Scripts = scripts
	return inst
}

// 1. A package without a scripts folder: a component's pre-command runs in
// its target, which does not exist before the first installation, so the
// first install of any such package with a pre-command fails.
func TestPreWithoutScriptsOnFirstInstall(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	m := rvPublish(t, f, 1, map[string]string{"components/app/bin": "x"})
	inst := rvInstallation(t, m, []rvPart{{name: "app", to: "opt/app", pre: []string{"true"}}})
	if err := in.InstallParts(context.Background(), inst, nil); err != nil {
		t.Fatalf("first install of a package whose component has a pre-command and no scripts folder: %v", err)
	}
}

// 2. A rollback runs the restored revision's post-commands before the files
// that revision had and the undone one dropped are back: they come back
// only in restore(-1), after every postAgain.
func TestPostAgainAfterDroppedFilesAreBack(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	check := []string{`test -f "$TED_TARGET/lib/old.so" || { echo old.so missing; exit 1; }`}
	m1 := rvPublish(t, f, 1, map[string]string{"components/app/bin": "1", "components/app/lib/old.so": "lib", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m1, []rvPart{{name: "app", to: "opt/app", post: check}}), nil); err != nil {
		t.Fatal(err)
	}
	m2 := rvPublish(t, f, 2, map[string]string{"components/app/bin": "2", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m2, []rvPart{{name: "app", to: "opt/app"}}), nil); err != nil {
		t.Fatal(err)
	}
	res, err := in.Rollback(context.Background(), RollbackOptions{Name: "pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) > 0 {
		t.Fatalf("post-command of the revision brought back ran before its files were back: %q", res.Warnings)
	}
}

// 3. postAgain runs the restored revision's post-commands from that
// installation's undo directory, which prune has removed once it is past
// keep (with keep 1, always): the commands run in the target instead and
// fail.
func TestPostAgainScriptsKeptPastPrune(t *testing.T) {
	f := newFixture(t)
	f.keep = 1
	in := f.installer(f.store, "")
	for rev := 1; rev <= 2; rev++ {
		m := rvPublish(t, f, rev, map[string]string{"components/app/bin": string(rune('0' + rev)), "scripts/start.sh": "exit 0\n"})
		inst := rvInstallation(t, m, []rvPart{{name: "app", to: "opt/app", post: []string{"sh start.sh"}}})
		if err := in.InstallParts(context.Background(), inst, nil); err != nil {
			t.Fatal(err)
		}
	}
	res, err := in.Rollback(context.Background(), RollbackOptions{Name: "pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) > 0 {
		t.Fatalf("post-command of pkg@1 failed after the rollback: %q", res.Warnings)
	}
}

// 4. An entry of the earlier revision in the way of a later part (a file
// where part 1's target needs a directory) is removed before part 0's
// pre-command; when part 0 fails, only parts <= 0 and -1 are restored, and
// the change, attributed to part 1, is never put back: the file is lost.
func TestClearedEntryBackWhenEarlierPartFails(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	m1 := rvPublish(t, f, 1, map[string]string{"components/app/docs": "v1 docs file\n", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m1, []rvPart{{name: "app", to: "opt/w"}}), nil); err != nil {
		t.Fatal(err)
	}
	before := listing(t, f.root)
	m2 := rvPublish(t, f, 2, map[string]string{"components/app/bin": "2", "components/docs/index.html": "2", "scripts/x": ""})
	inst := rvInstallation(t, m2, []rvPart{
		{name: "app", to: "opt/w/app", pre: []string{"exit 1"}},
		{name: "docs", to: "opt/w/docs"},
	})
	if err := in.InstallParts(context.Background(), inst, nil); err == nil {
		t.Fatal("want the pre-command's failure")
	}
	assertSameTree(t, before, listing(t, f.root))
}

// 5. A directory entry of part 0 that is also on the way to part 1's target
// is attributed to part 1; when part 0's post-command fails the directory
// part 0 wrote is not taken away.
func TestDirOfEarlierPartGoneWhenItFails(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	empty := listing(t, f.root)
	m := rvPublish(t, f, 1, map[string]string{"components/app/bin": "1", "components/app/plugins/": "",
		"components/plugins/p.so": "p", "scripts/x": ""})
	inst := rvInstallation(t, m, []rvPart{
		{name: "app", to: "opt/w", post: []string{"exit 1"}},
		{name: "plugins", to: "opt/w/plugins"},
	})
	if err := in.InstallParts(context.Background(), inst, nil); err == nil {
		t.Fatal("want the post-command's failure")
	}
	assertSameTree(t, empty, listing(t, f.root))
}

// 6. A component dropped in v2 (or whose to: changes) leaves its target
// folder behind, empty: the target itself is in no record.
func TestDroppedComponentTakesItsTarget(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	m1 := rvPublish(t, f, 1, map[string]string{"components/app/bin": "1", "components/docs/index.html": "d", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m1, []rvPart{{name: "app", to: "opt/w/app"}, {name: "docs", to: "opt/w/docs"}}), nil); err != nil {
		t.Fatal(err)
	}
	m2 := rvPublish(t, f, 2, map[string]string{"components/app/bin": "2", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m2, []rvPart{{name: "app", to: "opt/w/app"}}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(f.root, "opt/w/docs")); err == nil {
		t.Fatalf("opt/w/docs left behind after its component was dropped: %v", listing(t, f.root))
	}
}

// 7. A component's target folder is in no record, so installedDirs does
// not guard it: after it is replaced by a symlink (inside the root), an
// upgrade that drops the component deletes, through the link, a file TED
// never installed.
func TestDroppedComponentNotThroughSymlinkedTarget(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	m1 := rvPublish(t, f, 1, map[string]string{"components/app/bin": "1", "components/docs/index.html": "d", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m1, []rvPart{{name: "app", to: "opt/w/app"}, {name: "docs", to: "opt/w/docs"}}), nil); err != nil {
		t.Fatal(err)
	}
	// An operator moves the docs to a site of their own and links it.
	writeFile(t, filepath.Join(f.root, "srv/site/index.html"), []byte("not TED's\n"), 0o644)
	if err := os.RemoveAll(filepath.Join(f.root, "opt/w/docs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../srv/site", filepath.Join(f.root, "opt/w/docs")); err != nil {
		t.Fatal(err)
	}
	m2 := rvPublish(t, f, 2, map[string]string{"components/app/bin": "2", "scripts/x": ""})
	if err := in.InstallParts(context.Background(), rvInstallation(t, m2, []rvPart{{name: "app", to: "opt/w/app"}}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, "srv/site/index.html")); err != nil {
		t.Fatalf("a file TED never installed was removed through the symlinked component target: %v", err)
	}
}

// 8. Two packages install the same path; the second's upgrade drops it and
// deletes the first package's file (which still records it).
func TestUpgradeKeepsOtherPackagesFile(t *testing.T) {
	f := newFixture(t)
	in := f.installer(f.store, "")
	pub := func(name string, rev int, tree map[string]string) *distribution.Manifest {
		dir := tempDir(t)
		for p, c := range tree {
			writeFile(t, filepath.Join(dir, p), []byte(c), 0o644)
		}
		return f.publishWith(dir, distribution.BuildOptions{Name: name, Revision: uint64(rev), Version: "1.0." + string(rune('0'+rev)), Target: name, Kind: distribution.KindPackage})
	}
	a := pub("a", 1, map[string]string{"components/conf/shared.conf": "a\n"})
	if err := in.InstallParts(context.Background(), rvInstallation(t, a, []rvPart{{name: "conf", to: "etc/shared"}}), nil); err != nil {
		t.Fatal(err)
	}
	b1 := pub("b", 1, map[string]string{"components/conf/shared.conf": "b\n"})
	if err := in.InstallParts(context.Background(), rvInstallation(t, b1, []rvPart{{name: "conf", to: "etc/shared"}}), nil); err != nil {
		t.Fatal(err)
	}
	b2 := pub("b", 2, map[string]string{"components/conf/other.conf": "b2\n"})
	if err := in.InstallParts(context.Background(), rvInstallation(t, b2, []rvPart{{name: "conf", to: "etc/shared"}}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, "etc/shared/shared.conf")); err != nil {
		t.Fatalf("b's upgrade deleted the file package a installed and still records: %v", err)
	}
}
