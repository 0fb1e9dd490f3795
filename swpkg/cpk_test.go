package swpkg

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// compileSample compiles the sample tree and returns the spec and the .cpk.
func compileSample(t *testing.T) (*Spec, string) {
	t.Helper()
	dir := specTree(t)
	spec, err := ParseSpec(writeSpec(t, dir, baseSpec))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "webstack.cpk")
	res, err := Compile(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	want := CompileResult{Name: "webstack", Version: "2.1.0", Components: 2, Files: 7, Bytes: info.Size(), Out: out}
	if res != want {
		t.Errorf("Compile = %+v, want %+v", res, want)
	}
	return spec, out
}

// treeEntry is what a test compares of one path.
type treeEntry struct {
	mode    fs.FileMode
	content string // files: content; symlinks: target
}

// readTree lists a folder's entries by slash path, "." being the folder.
func readTree(t *testing.T, dir string) map[string]treeEntry {
	t.Helper()
	tree := make(map[string]treeEntry)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: info.Mode()}
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.content = string(b)
		case info.Mode()&fs.ModeSymlink != 0:
			if e.content, err = os.Readlink(p); err != nil {
				return err
			}
			e.mode = fs.ModeSymlink // link permissions differ by system
		}
		tree[filepath.ToSlash(rel)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func TestCompileOpen(t *testing.T) {
	spec, cpk := compileSample(t)
	dir := filepath.Join(t.TempDir(), "unpacked")
	pkg, err := Open(cpk, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*pkg, spec.Package) {
		t.Errorf("descriptor =\n%+v\nwant\n%+v", *pkg, spec.Package)
	}
	b, err := os.ReadFile(filepath.Join(dir, DescriptorPath))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := DecodePackage(b); err != nil || !reflect.DeepEqual(again, pkg) {
		t.Errorf("%s in the tree: %v, %+v", DescriptorPath, err, again)
	}
	for name, from := range spec.From {
		got, want := readTree(t, filepath.Join(dir, ComponentsDir, name)), readTree(t, from)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("component %s:\n got %v\nwant %v", name, got, want)
		}
	}
	if got, want := readTree(t, filepath.Join(dir, ScriptsDir)), readTree(t, spec.Scripts); !reflect.DeepEqual(got, want) {
		t.Errorf("scripts:\n got %v\nwant %v", got, want)
	}
	top, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range top {
		names = append(names, e.Name())
	}
	if want := []string{ComponentsDir, DescriptorPath, ScriptsDir}; !reflect.DeepEqual(names, want) {
		t.Errorf("unpacked %v, want %v", names, want)
	}
	// Spot-check what the comparison covers.
	tree := readTree(t, filepath.Join(dir, ComponentsDir, "binaries"))
	if e := tree["sbin/setuid-helper"]; e.mode != 0o750|fs.ModeSetuid {
		t.Errorf("setuid-helper mode %v", e.mode)
	}
	if e := tree["lib/libweb.so"]; e.mode != fs.ModeSymlink || e.content != "libweb.so.1" {
		t.Errorf("libweb.so = %+v", e)
	}
	if e := readTree(t, filepath.Join(dir, ComponentsDir, "docs"))["ro"]; e.mode != 0o555|fs.ModeDir {
		t.Errorf("ro mode %v", e.mode)
	}
	os.Chmod(filepath.Join(dir, ComponentsDir, "docs", "ro"), 0o755) // for the cleanup

	// Open refuses a folder that is not empty.
	if _, err := Open(cpk, dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Open into a full folder: %v", err)
	}
	// An empty folder that exists will do.
	empty := t.TempDir()
	if _, err := Open(cpk, empty); err != nil {
		t.Errorf("Open into an empty folder: %v", err)
	}
	os.Chmod(filepath.Join(empty, ComponentsDir, "docs", "ro"), 0o755)
}

func TestCompileDeterministic(t *testing.T) {
	spec, cpk := compileSample(t)
	again := filepath.Join(t.TempDir(), "again.cpk")
	if _, err := Compile(spec, again); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(cpk)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("two compiles of the same tree differ")
	}
	// The layout: descriptor first, sorted entries, digest last.
	tr := tar.NewReader(bytes.NewReader(a))
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.ModTime.Unix() != 0 || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: mtime %v uid %d gid %d %q %q", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		names = append(names, hdr.Name)
	}
	want := []string{
		"package.cbor",
		"components/binaries/", "components/binaries/current", "components/binaries/empty/",
		"components/binaries/lib/", "components/binaries/lib/libweb.so", "components/binaries/lib/libweb.so.1",
		"components/binaries/sbin/", "components/binaries/sbin/setuid-helper", "components/binaries/webstack",
		"components/docs/", "components/docs/README", "components/docs/ro/", "components/docs/ro/notes.txt",
		"scripts/", "scripts/start.sh", "scripts/stop.sh",
		"SHA256",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries\n%q\nwant\n%q", names, want)
	}
	// The digest covers every byte before its own header.
	end := len(a) - 2*512 - 512 - 512 // end blocks, digest content, digest header
	sum := sha256.Sum256(a[:end])
	if got := string(a[end+512 : end+512+64]); got != hexString(sum[:]) {
		t.Errorf("SHA256 entry %s, bytes hash to %x", got, sum)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, digits[c>>4], digits[c&15])
	}
	return string(s)
}

// openBad opens a bad .cpk into a folder of a fresh parent, checks the error
// names the file and wraps ErrInvalidPackage, and that nothing is left
// behind anywhere in the parent. It returns the error.
func openBad(t *testing.T, data []byte) error {
	t.Helper()
	parent := t.TempDir()
	cpk := filepath.Join(parent, "bad.cpk")
	if err := os.WriteFile(cpk, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(cpk, filepath.Join(parent, "out"))
	if err == nil {
		t.Fatal("Open: no error")
	}
	if !errors.Is(err, ErrInvalidPackage) || !strings.HasPrefix(err.Error(), cpk+": ") {
		t.Errorf("error %q: want it to start with the file name and wrap ErrInvalidPackage", err)
	}
	entries, rerr := os.ReadDir(parent)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("Open left %v behind", names)
	}
	return err
}

func TestOpenTruncated(t *testing.T) {
	_, cpk := compileSample(t)
	data, err := os.ReadFile(cpk)
	if err != nil {
		t.Fatal(err)
	}
	n := len(data)
	for _, cut := range []int{0, 1, 100, 511, 512, 513, 1024, 1500, n / 2, n/2 + 512 - n/2%512, n - 2048, n - 1536, n - 1500, n - 1024, n - 512, n - 1} {
		err := openBad(t, data[:cut])
		if !strings.Contains(err.Error(), "truncated") {
			t.Errorf("cut at %d of %d: %v", cut, n, err)
		}
	}
	// Bytes after the end are refused too.
	err = openBad(t, append(bytes.Clone(data), 0))
	if !strings.Contains(err.Error(), "data after the end") {
		t.Errorf("one byte more: %v", err)
	}
}

func TestOpenFlippedByte(t *testing.T) {
	_, cpk := compileSample(t)
	data, err := os.ReadFile(cpk)
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	bad := filepath.Join(parent, "bad.cpk")
	out := filepath.Join(parent, "out")
	digestErrors := 0
	// Every byte of the first header and of the digest's header and
	// content, every 7th of the padding and end of archive after them, and
	// every 17th byte between; each with a flip of a low bit and of the bit
	// that turns NUL into a space (which tar's number fields ignore).
	trailer := len(data) - 2048
	for off := 0; off < len(data); off++ {
		switch {
		case off < 512, off >= trailer && off < trailer+576:
		case off >= trailer && off%7 == 0:
		case off%17 == 0:
		default:
			continue
		}
		for _, mask := range []byte{0x01, 0x20} {
			flipped := bytes.Clone(data)
			flipped[off] ^= mask
			if err := os.WriteFile(bad, flipped, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(bad, out)
			if err == nil {
				t.Fatalf("byte %d of %d ^ %#x: opened", off, len(data), mask)
			}
			if !errors.Is(err, ErrInvalidPackage) || !strings.HasPrefix(err.Error(), bad+": ") {
				t.Fatalf("byte %d ^ %#x: %v", off, mask, err)
			}
			if strings.Contains(err.Error(), "digest mismatch") {
				digestErrors++
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("byte %d ^ %#x: Open left %s behind", off, mask, out)
			}
		}
	}
	if digestErrors == 0 {
		t.Error("no flip was reported as a digest mismatch")
	}
}

// craftEntry is one entry of a hand-made .cpk.
type craftEntry struct {
	name     string
	typ      byte
	content  string // regular files
	linkname string
}

// craft builds a .cpk with a correct digest from the given entries, so only
// the rules about entries can refuse it.
func craft(t *testing.T, entries ...craftEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(&buf, h))
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.linkname, Mode: 0o644, Size: int64(len(e.content))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := writeTrailer(tar.NewWriter(&buf), h); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// descriptorEntry is the descriptor of a one-component package "web".
func descriptorEntry(t *testing.T) craftEntry {
	t.Helper()
	pkg := Package{Format: PackageFormat, Name: "web", Version: "1.0.0", Components: []Component{{Name: "web", To: "opt/web"}}}
	b, err := pkg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return craftEntry{name: DescriptorPath, typ: tar.TypeReg, content: string(b)}
}

func TestOpenCrafted(t *testing.T) {
	desc := descriptorEntry(t)
	dir := func(name string) craftEntry { return craftEntry{name: name, typ: tar.TypeDir} }
	file := func(name string) craftEntry { return craftEntry{name: name, typ: tar.TypeReg, content: "x"} }
	link := func(name, target string) craftEntry {
		return craftEntry{name: name, typ: tar.TypeSymlink, linkname: target}
	}
	web := dir("components/web/")
	good := craft(t, desc, web, file("components/web/a"), dir("scripts/"), file("scripts/s.sh"))
	if _, err := Open(filepath.Join(t.TempDir(), "x.cpk"), t.TempDir()); err == nil {
		t.Error("Open of a missing file: no error")
	}
	goodFile := filepath.Join(t.TempDir(), "good.cpk")
	if err := os.WriteFile(goodFile, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(goodFile, filepath.Join(t.TempDir(), "out")); err != nil {
		t.Fatalf("the crafted base case: %v", err)
	}
	cases := []struct {
		name    string
		entries []craftEntry
		want    string
	}{
		{"absolute", []craftEntry{desc, web, file("/etc/evil")}, `entry "/etc/evil": absolute path`},
		{"dotdot", []craftEntry{desc, web, file("../evil")}, `entry "../evil": path has a .. element`},
		{"unclean", []craftEntry{desc, web, file("components/web/../../evil")}, `entry "components/web/../../evil": path is not clean`},
		{"outside the places", []craftEntry{desc, web, file("etc/passwd")}, `entry "etc/passwd": outside package.cbor, components/ and scripts/`},
		{"components itself", []craftEntry{desc, dir("components/"), web}, `entry "components/": not inside a component's folder`},
		{"extra component", []craftEntry{desc, dir("components/other/"), web}, `entry "components/other/": component "other" is not in the descriptor`},
		{"missing component", []craftEntry{desc, dir("scripts/")}, `component "web" has no folder components/web`},
		{"component folder a file", []craftEntry{desc, file("components/web")}, `entry "components/web": must be a directory`},
		{"duplicate", []craftEntry{desc, web, file("components/web/a"), file("components/web/a")}, `entry "components/web/a": duplicate`},
		{"duplicate descriptor", []craftEntry{desc, web, desc}, `entry "package.cbor": duplicate`},
		{"out of order", []craftEntry{desc, web, file("components/web/b"), file("components/web/a")}, `entry "components/web/a": out of order`},
		{"no descriptor", []craftEntry{web}, `first entry is "components/web/", want the descriptor package.cbor`},
		{"empty", nil, `no descriptor entry package.cbor`},
		{"bad descriptor", []craftEntry{{name: DescriptorPath, typ: tar.TypeReg, content: "\xa0"}, web}, `invalid package descriptor`},
		{"no parent", []craftEntry{desc, web, file("components/web/sub/a")}, `entry "components/web/sub/a": "components/web/sub" is not a directory entry before it`},
		{"symlink out", []craftEntry{desc, web, link("components/web/l", "../../..")}, `entry "components/web/l": symlink target "../../.." escapes the tree`},
		{"symlink to another component", []craftEntry{desc, web, link("components/web/l", "../other")}, `escapes the tree`},
		{"symlink absolute", []craftEntry{desc, web, link("components/web/l", "/etc")}, `symlink target "/etc" is absolute`},
		{"through a symlink", []craftEntry{desc, web, link("components/web/l", "."), file("components/web/l/x")}, `entry "components/web/l/x": "components/web/l" is not a directory entry before it`},
		{"hard link", []craftEntry{desc, web, file("components/web/a"), {name: "components/web/b", typ: tar.TypeLink, linkname: "components/web/a"}}, `entry "components/web/b": special file`},
		{"device", []craftEntry{desc, web, {name: "components/web/null", typ: tar.TypeChar}}, `entry "components/web/null": special file`},
		{"fifo", []craftEntry{desc, web, {name: "components/web/p", typ: tar.TypeFifo}}, `special file`},
		{"entry named like the digest", []craftEntry{desc, web, file("SHA256")}, `the SHA256 entry does not hold a SHA-256 in hex`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := openBad(t, craft(t, c.entries...))
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
		})
	}
	t.Run("entry after the digest", func(t *testing.T) {
		data := craft(t, desc, web)
		data = data[:len(data)-1024] // drop the end of archive
		var more bytes.Buffer
		tw := tar.NewWriter(&more)
		if err := tw.WriteHeader(&tar.Header{Name: "scripts/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
		tw.Close()
		err := openBad(t, append(data, more.Bytes()...))
		if !strings.Contains(err.Error(), "data after the end of the archive") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("not a tar", func(t *testing.T) {
		err := openBad(t, bytes.Repeat([]byte("not a tar file\n"), 100))
		if !strings.Contains(err.Error(), "damaged") {
			t.Errorf("error %q", err)
		}
	})
}

// TestOpenStaysInside plants symlinks in the target folder's surroundings and
// checks a hostile archive writes nothing outside the folder.
func TestOpenStaysInside(t *testing.T) {
	desc := descriptorEntry(t)
	parent := t.TempDir()
	victim := filepath.Join(parent, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, entries := range [][]craftEntry{
		{desc, {name: "components/web/", typ: tar.TypeDir}, {name: "components/web/l", typ: tar.TypeSymlink, linkname: "../../../victim"}, {name: "components/web/l/evil", typ: tar.TypeReg, content: "x"}},
		{desc, {name: "components/web/", typ: tar.TypeDir}, {name: "components/web/l", typ: tar.TypeSymlink, linkname: victim}},
		{desc, {name: "components/web/", typ: tar.TypeDir}, {name: "../victim/evil", typ: tar.TypeReg, content: "x"}},
		{desc, {name: "components/web/", typ: tar.TypeDir}, {name: filepath.Join(victim, "evil"), typ: tar.TypeReg, content: "x"}},
	} {
		cpk := filepath.Join(parent, "bad.cpk")
		if err := os.WriteFile(cpk, craft(t, entries...), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(cpk, filepath.Join(parent, "out")); err == nil {
			t.Errorf("%v: opened", entries)
		}
		if got, _ := os.ReadDir(victim); len(got) != 0 {
			t.Fatalf("Open wrote %s in %s", got[0].Name(), victim)
		}
		if _, err := os.Stat(filepath.Join(parent, "out")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open left its folder behind")
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"fifo", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "docs/pipe"), 0o644); err != nil {
				t.Skip("mkfifo:", err)
			}
		}, "docs/pipe: special file"},
		{"symlink out", func(t *testing.T, dir string) {
			if err := os.Symlink("../../outside/secret", filepath.Join(dir, "docs/leak")); err != nil {
				t.Fatal(err)
			}
		}, "docs/leak: symlink must stay inside the component folder"},
		{"symlink to the other component", func(t *testing.T, dir string) {
			if err := os.Symlink("../bin/webstack", filepath.Join(dir, "docs/bin")); err != nil {
				t.Fatal(err)
			}
		}, `docs/bin: symlink must stay inside the component folder`},
		{"absolute symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "docs/passwd")); err != nil {
				t.Fatal(err)
			}
		}, `docs/passwd: symlink must stay inside the component folder`},
		{"symlink out of the scripts", func(t *testing.T, dir string) {
			if err := os.Symlink("../bin/webstack", filepath.Join(dir, "scripts/run")); err != nil {
				t.Fatal(err)
			}
		}, `scripts/run: symlink must stay inside the scripts folder`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := specTree(t)
			spec, err := ParseSpec(writeSpec(t, dir, baseSpec))
			if err != nil {
				t.Fatal(err)
			}
			c.setup(t, dir)
			outDir := t.TempDir()
			_, err = Compile(spec, filepath.Join(outDir, "w.cpk"))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "compile "+spec.File+": ") {
				t.Errorf("Compile: %v; want %q", err, c.want)
			}
			if left, _ := os.ReadDir(outDir); len(left) != 0 {
				t.Errorf("Compile left %s behind", left[0].Name())
			}
		})
	}
	t.Run("output inside a source", func(t *testing.T) {
		dir := specTree(t)
		spec, err := ParseSpec(writeSpec(t, dir, baseSpec))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Compile(spec, filepath.Join(dir, "docs", "w.cpk"))
		if err == nil || !strings.Contains(err.Error(), "it would pack itself") {
			t.Errorf("Compile: %v", err)
		}
	})
}

func TestCompileDefaultOut(t *testing.T) {
	dir := specTree(t)
	spec, err := ParseSpec(writeSpec(t, dir, baseSpec))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	res, err := Compile(spec, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Out != "webstack-2.1.0.cpk" {
		t.Errorf("Out = %q", res.Out)
	}
	if _, err := os.Stat(res.Out); err != nil {
		t.Error(err)
	}
}

// TestCompileOpenLongNames needs PAX headers: a path too long for ustar and
// a name that is not ASCII.
func TestCompileOpenLongNames(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(strings.Repeat("deep-folder-name/", 20), "file.txt")
	writeFile(t, filepath.Join(dir, "bin", long), "long", 0o640)
	writeFile(t, filepath.Join(dir, "bin", "café ☕.txt"), "utf-8", 0o600)
	if err := os.Symlink(long, filepath.Join(dir, "bin", "to-long")); err != nil {
		t.Fatal(err)
	}
	spk := writeSpec(t, dir, "name: long\nversion: 1.0.0\ncomponents:\n  - name: bin\n    files: {from: bin, to: opt/long}\n")
	spec, err := ParseSpec(spk)
	if err != nil {
		t.Fatal(err)
	}
	cpk := filepath.Join(t.TempDir(), "long.cpk")
	if _, err := Compile(spec, cpk); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Open(cpk, out); err != nil {
		t.Fatal(err)
	}
	if got, want := readTree(t, filepath.Join(out, ComponentsDir, "bin")), readTree(t, filepath.Join(dir, "bin")); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}
