package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ted/distribution"
)

// packageTree is a package revision's tree: two components and a script
// that logs each command's phase, component and revision.
func packageTree(t *testing.T, log string, rev int) string {
	dir := tempDir(t)
	writeFile(t, filepath.Join(dir, "components/app/bin/app"), binary(uint64(rev), 50<<10), 0o755)
	writeFile(t, filepath.Join(dir, "components/app/etc/app.conf"), []byte(fmt.Sprintf("rev = %d\n", rev)), 0o640)
	writeFile(t, filepath.Join(dir, "components/docs/index.html"), []byte(fmt.Sprintf("<h1>%d</h1>\n", rev)), 0o644)
	writeFile(t, filepath.Join(dir, "scripts/log.sh"),
		[]byte(fmt.Sprintf("echo \"$TED_PHASE $TED_COMPONENT $TED_REVISION\" >> %s\n", log)), 0o644)
	return dir
}

// packageInstallation builds the installation of package revision m:
// every component, with the logging script as its pre, post and undo
// commands; failPost makes one component's post-command fail.
func packageInstallation(t *testing.T, m *distribution.Manifest, prefix, failPost string) *Installation {
	t.Helper()
	inst := &Installation{Name: m.Name, Revision: m.Revision, Version: m.Version, Kind: distribution.KindPackage}
	for _, c := range []string{"app", "docs"} {
		sub, err := SubManifest(m, "components/"+c, prefix+"/"+c)
		if err != nil || sub == nil {
			t.Fatalf("component %s: %v", c, err)
		}
		p := Part{Component: c, M: sub, Pre: []string{"sh log.sh"}, Post: []string{"sh log.sh"}, Undo: []string{"sh log.sh"}}
		if c == failPost {
			p.Post = append(p.Post, "echo cannot start >&2; exit 3")
		}
		inst.Parts = append(inst.Parts, p)
	}
	scripts, err := SubManifest(m, "scripts", "scripts")
	if err != nil || scripts == nil {
		t.Fatalf("scripts: %v", err)
	}
	inst.Scripts = scripts
	return inst
}

// logged returns the lines the logging script wrote, and empties the log.
func logged(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	_ = os.Remove(log)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func publishPackage(t *testing.T, f *fixture, name string, rev int, log string) *distribution.Manifest {
	t.Helper()
	return f.publishWith(packageTree(t, log, rev), distribution.BuildOptions{Name: name, Revision: uint64(rev),
		Version: fmt.Sprintf("1.%d.0", rev), Target: name, Kind: distribution.KindPackage})
}

func TestInstallPackageAndRollBack(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "actions.log")
	in := f.installer(f.store, "")
	empty := listing(t, f.root)

	m1 := publishPackage(t, f, "webstack", 1, log)
	if err := in.InstallParts(context.Background(), packageInstallation(t, m1, "opt/webstack", ""), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := logged(t, log), []string{"pre app 1", "post app 1", "pre docs 1", "post docs 1"}; !slices.Equal(got, want) {
		t.Errorf("commands ran %q, want %q", got, want)
	}
	afterOne := listing(t, f.root)
	rec, ok, err := in.InstalledRevision("webstack")
	if err != nil || !ok || rec.Kind != distribution.KindPackage || len(rec.Parts) != 2 || rec.Target != "" {
		t.Fatalf("InstalledRevision = %+v, %v, %v", rec, ok, err)
	}

	m2 := publishPackage(t, f, "webstack", 2, log)
	if err := in.InstallParts(context.Background(), packageInstallation(t, m2, "opt/webstack", ""), nil); err != nil {
		t.Fatal(err)
	}
	logged(t, log)
	b, err := os.ReadFile(filepath.Join(f.root, "opt/webstack/app/etc/app.conf"))
	if err != nil || string(b) != "rev = 2\n" {
		t.Fatalf("app.conf after rev 2: %q, %v", b, err)
	}

	// Rollback runs each component's undo commands, last component first,
	// restores its files, and once every file is back runs the
	// post-commands of the revision brought back, in its order (they
	// start again what undo stopped).
	res, err := in.Rollback(context.Background(), RollbackOptions{Name: "webstack"})
	if err != nil || res.From != 2 || res.To != 1 || len(res.Warnings) != 0 {
		t.Fatalf("Rollback = %+v, %v", res, err)
	}
	if got, want := logged(t, log), []string{"undo docs 2", "undo app 2", "post app 1", "post docs 1"}; !slices.Equal(got, want) {
		t.Errorf("rollback ran %q, want %q", got, want)
	}
	assertSameTree(t, afterOne, listing(t, f.root))
	if _, err := in.Rollback(context.Background(), RollbackOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, want := logged(t, log), []string{"undo docs 1", "undo app 1"}; !slices.Equal(got, want) {
		t.Errorf("rollback ran %q, want %q", got, want)
	}
	assertSameTree(t, empty, listing(t, f.root))
}

func TestFailingComponentRollsBackThePackage(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "actions.log")
	in := f.installer(f.store, "")
	m1 := publishPackage(t, f, "webstack", 1, log)
	if err := in.InstallParts(context.Background(), packageInstallation(t, m1, "opt/webstack", ""), nil); err != nil {
		t.Fatal(err)
	}
	logged(t, log)
	before := listing(t, f.root)

	m2 := publishPackage(t, f, "webstack", 2, log)
	err := in.InstallParts(context.Background(), packageInstallation(t, m2, "opt/webstack", "docs"), nil)
	if err == nil || !strings.Contains(err.Error(), "exited 3") || !strings.Contains(err.Error(), "rolled back to webstack@1") {
		t.Fatalf("InstallParts: %v; want the post-command's failure and a rollback", err)
	}
	want := []string{"pre app 2", "post app 2", "pre docs 2", "post docs 2", "undo docs 2", "undo app 2", "post app 1", "post docs 1"}
	if got := logged(t, log); !slices.Equal(got, want) {
		t.Errorf("commands ran %q, want %q", got, want)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertPending(t, in, nil)
	if rec, _, _ := in.InstalledRevision("webstack"); rec.Revision != 1 {
		t.Errorf("webstack@%d installed, want 1", rec.Revision)
	}
}

func TestPackagesRollBackLastInFirstOut(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "actions.log")
	in := f.installer(f.store, "")
	for _, name := range []string{"base", "webstack", "tools"} {
		m := publishPackage(t, f, name, 1, log)
		if err := in.InstallParts(context.Background(), packageInstallation(t, m, "opt/"+name, ""), nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err := in.Rollback(context.Background(), RollbackOptions{Name: "base"})
	if !errors.Is(err, ErrNotLatest) || !strings.Contains(err.Error(), "tools@1, webstack@1 installed later") {
		t.Fatalf("Rollback(base): %v; want ErrNotLatest naming tools and webstack", err)
	}
	for _, want := range []string{"tools", "webstack", "base"} {
		res, err := in.Rollback(context.Background(), RollbackOptions{})
		if err != nil || res.Name != want {
			t.Fatalf("Rollback() = %+v, %v; want %s undone", res, err, want)
		}
	}
}

func TestOverlappingComponentsRefused(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "actions.log")
	in := f.installer(f.store, "")
	m := publishPackage(t, f, "webstack", 1, log)
	inst := packageInstallation(t, m, "opt/webstack", "")
	inst.Parts[1].M.Target = inst.Parts[0].M.Target + "/etc/app.conf" // a folder where app has a file
	before := listing(t, f.root)
	err := in.InstallParts(context.Background(), inst, nil)
	if err == nil || !strings.Contains(err.Error(), "components app and docs both install opt/webstack/app/etc/app.conf") {
		t.Fatalf("InstallParts: %v; want the overlap named", err)
	}
	assertSameTree(t, before, listing(t, f.root))
}

// TestRecoverPackageInterruptedBetweenComponents crashes as the second
// component begins: recovery runs the undo commands of both components
// (the second's pre-command may have run), last first, and puts every
// file back.
func TestRecoverPackageInterruptedBetweenComponents(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "actions.log")
	in := f.installer(f.store, "")
	m1 := publishPackage(t, f, "webstack", 1, log)
	if err := in.InstallParts(context.Background(), packageInstallation(t, m1, "opt/webstack", ""), nil); err != nil {
		t.Fatal(err)
	}
	logged(t, log)
	before := listing(t, f.root)

	m2 := publishPackage(t, f, "webstack", 2, log)
	crashing := f.installer(f.store, "")
	writes := 0
	crashing.SetHook(func(point string) error {
		if point == string(StepWrite) {
			if writes++; writes == 2 {
				return errCrash
			}
		}
		return nil
	})
	if err := crashing.InstallParts(context.Background(), packageInstallation(t, m2, "opt/webstack", ""), nil); !errors.Is(err, errCrash) {
		t.Fatalf("InstallParts: %v, want the crash", err)
	}
	if got, want := logged(t, log), []string{"pre app 2", "post app 2"}; !slices.Equal(got, want) {
		t.Fatalf("before the crash %q ran, want %q", got, want)
	}
	restarted := f.installer(f.store, "")
	if err := restarted.Recover(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := logged(t, log), []string{"undo docs 2", "undo app 2", "post app 1", "post docs 1"}; !slices.Equal(got, want) {
		t.Errorf("recovery ran %q, want %q", got, want)
	}
	assertSameTree(t, before, listing(t, f.root))
	assertPending(t, restarted, nil)
}
