package swpkg

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func ptr(s string) *string { return &s }

// fakeEnv is a server with 52 MiB free everywhere, 1 GiB of memory and
// DEPLOY=prod.
func fakeEnv(root string) Env {
	return Env{
		GOOS:         "linux",
		GOARCH:       "amd64",
		AgentVersion: "1.2.3",
		Root:         root,
		FreeDisk:     func(string) (int64, error) { return 52 << 20, nil },
		MemAvailable: func() (int64, error) { return 1 << 30, nil },
		LookupEnv: func(name string) (string, bool) {
			if name == "DEPLOY" {
				return "prod", true
			}
			return "", false
		},
	}
}

func TestCheck(t *testing.T) {
	root := t.TempDir()
	abs := filepath.Join(root, "marker")
	if err := os.WriteFile(abs, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const helloSHA = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
	const otherSHA = "0000000000000000000000000000000000000000000000000000000000000000"
	missing := filepath.Join(root, "missing")
	cases := []struct {
		p      Prerequisite
		ok     bool
		reason string // for !ok: the whole reason, or a prefix ending in "…"
	}{
		{Prerequisite{Kind: "os", Value: "linux"}, true, ""},
		{Prerequisite{Kind: "os", Value: "darwin"}, false, "os darwin: this server runs linux"},
		{Prerequisite{Kind: "arch", Value: "amd64"}, true, ""},
		{Prerequisite{Kind: "arch", Value: "arm64"}, false, "arch arm64: this server is amd64"},
		{Prerequisite{Kind: "free_disk", Path: "/", Min: 50 << 20}, true, ""},
		{Prerequisite{Kind: "free_disk", Path: "/", Min: 100 << 20}, false, "free_disk /: 52 MiB free, need at least 100 MiB"},
		{Prerequisite{Kind: "free_disk", Path: "data", Min: 100 << 20}, false, "free_disk data: 52 MiB free at " + filepath.Join(root, "data") + ", need at least 100 MiB"},
		{Prerequisite{Kind: "memory", Min: 512 << 20}, true, ""},
		{Prerequisite{Kind: "memory", Min: 2 << 30}, false, "memory: 1.0 GiB available, need at least 2.0 GiB"},
		{Prerequisite{Kind: "file_exists", Value: abs}, true, ""},
		{Prerequisite{Kind: "file_exists", Value: "marker"}, true, ""},
		{Prerequisite{Kind: "file_exists", Value: missing}, false, "file_exists " + missing + ": not found"},
		{Prerequisite{Kind: "file_exists", Value: "etc/x"}, false, "file_exists etc/x: not found at " + filepath.Join(root, "etc/x")},
		{Prerequisite{Kind: "file_absent", Value: missing}, true, ""},
		{Prerequisite{Kind: "file_absent", Value: abs}, false, "file_absent " + abs + ": present"},
		{Prerequisite{Kind: "file_absent", Value: "marker"}, false, "file_absent marker: present at " + abs},
		{Prerequisite{Kind: "file_sha256", Path: abs, SHA256: helloSHA}, true, ""},
		{Prerequisite{Kind: "file_sha256", Path: "marker", SHA256: helloSHA}, true, ""},
		{Prerequisite{Kind: "file_sha256", Path: abs, SHA256: otherSHA}, false, "file_sha256 " + abs + ": sha256 is " + helloSHA + ", want " + otherSHA},
		{Prerequisite{Kind: "file_sha256", Path: missing, SHA256: helloSHA}, false, "file_sha256 " + missing + ": not found"},
		{Prerequisite{Kind: "env", Name: "DEPLOY"}, true, ""},
		{Prerequisite{Kind: "env", Name: "DEPLOY", EnvValue: ptr("prod")}, true, ""},
		{Prerequisite{Kind: "env", Name: "DEPLOY", EnvValue: ptr("staging")}, false, `env DEPLOY=staging: DEPLOY is "prod"`},
		{Prerequisite{Kind: "env", Name: "NOPE"}, false, "env NOPE: NOPE is not set"},
		{Prerequisite{Kind: "env", Name: "NOPE", EnvValue: ptr("")}, false, "env NOPE=: NOPE is not set"},
		{Prerequisite{Kind: "command", Value: "true", Timeout: time.Minute}, true, ""},
		{Prerequisite{Kind: "command", Value: "test -f marker", Timeout: time.Minute}, true, ""}, // runs in Root
		{Prerequisite{Kind: "command", Value: "test -x /x", Timeout: time.Minute}, false, `command "test -x /x": exited 1`},
		{Prerequisite{Kind: "command", Value: "echo 'no  such\nthing' >&2; exit 3", Timeout: time.Minute}, false, `command "echo 'no  such\nthing' >&2; exit 3": exited 3: no such thing`},
		{Prerequisite{Kind: "command", Value: "kill -9 $$", Timeout: time.Minute}, false, `command "kill -9 $$": killed by signal killed`},
		{Prerequisite{Kind: "agent_version", Value: ">=0.3, <2"}, true, ""},
		{Prerequisite{Kind: "agent_version", Value: ">=2"}, false, "agent_version >=2: this agent is 1.2.3"},
	}
	ctx := context.Background()
	env := fakeEnv(root)
	for _, c := range cases {
		t.Run(c.p.String(), func(t *testing.T) {
			if fe := c.p.validate(); fe != nil {
				t.Fatalf("test prerequisite does not validate: %s: %s", fe.field, fe.msg)
			}
			ok, reason, err := c.p.Check(ctx, env)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if ok != c.ok || reason != c.reason {
				t.Errorf("Check = %v, %q; want %v, %q", ok, reason, c.ok, c.reason)
			}
		})
	}
}

func TestCheckAgentVersionNotSemver(t *testing.T) {
	env := fakeEnv(t.TempDir())
	env.AgentVersion = "dev"
	ok, reason, err := Prerequisite{Kind: "agent_version", Value: ">=0.3"}.Check(context.Background(), env)
	if ok || err != nil || reason != `agent_version >=0.3: this agent's version "dev" is not a semantic version` {
		t.Errorf("Check = %v, %q, %v", ok, reason, err)
	}
}

func TestCheckEnvFailures(t *testing.T) {
	env := fakeEnv(t.TempDir())
	env.FreeDisk = func(p string) (int64, error) { return 0, errors.New("statfs " + p + ": no such file or directory") }
	env.MemAvailable = func() (int64, error) { return 0, errors.New("no /proc/meminfo") }
	ctx := context.Background()
	ok, reason, err := Prerequisite{Kind: "free_disk", Path: "/srv", Min: 1}.Check(ctx, env)
	if ok || err != nil || reason != "free_disk /srv: cannot tell the free space: statfs /srv: no such file or directory" {
		t.Errorf("free_disk = %v, %q, %v", ok, reason, err)
	}
	ok, reason, err = Prerequisite{Kind: "memory", Min: 1}.Check(ctx, env)
	if ok || err != nil || reason != "memory: cannot tell the available memory: no /proc/meminfo" {
		t.Errorf("memory = %v, %q, %v", ok, reason, err)
	}
	// A missing function is a broken Env, not a failed prerequisite.
	_, _, err = Prerequisite{Kind: "free_disk", Path: "/", Min: 1}.Check(ctx, Env{})
	if err == nil {
		t.Error("free_disk with no FreeDisk: no error")
	}
	_, _, err = Prerequisite{Kind: "kernel", Value: "6"}.Check(ctx, env)
	if err == nil {
		t.Error("unknown kind: no error")
	}
}

func TestCheckCommandTimeout(t *testing.T) {
	root := t.TempDir()
	pidFile := filepath.Join(root, "pid")
	// The background sleep is in the command's process group: the timeout
	// must kill it too, and not wait for it.
	p := Prerequisite{Kind: "command", Value: "sleep 5 & echo $! > " + pidFile + "; wait", Timeout: 200 * time.Millisecond}
	start := time.Now()
	ok, reason, err := p.Check(context.Background(), fakeEnv(root))
	elapsed := time.Since(start)
	if ok || err != nil || !strings.HasSuffix(reason, ": timed out after 200ms") || !strings.HasPrefix(reason, `command "sleep 5 &`) {
		t.Errorf("Check = %v, %q, %v", ok, reason, err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("took %v to time out after 200ms", elapsed)
	}
	if runtime.GOOS != "linux" {
		return
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !gone(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("background process %d still running after the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gone reports whether a process has ended (a zombie waiting for its reaper
// has ended).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

func TestCheckCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var ok bool
	var err error
	go func() {
		defer close(done)
		ok, _, err = Prerequisite{Kind: "command", Value: "sleep 5", Timeout: time.Minute}.Check(ctx, fakeEnv(t.TempDir()))
	}()
	// Cancel once the command has surely started; Check must return at
	// once either way.
	time.AfterFunc(100*time.Millisecond, cancel)
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		t.Fatal("Check did not return after cancel")
	}
	if ok || !errors.Is(err, context.Canceled) {
		t.Errorf("Check = %v, %v; want context.Canceled", ok, err)
	}
	// An ended ctx stops every kind before it runs.
	_, _, err = Prerequisite{Kind: "os", Value: "linux"}.Check(ctx, fakeEnv(""))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("os with ended ctx: %v", err)
	}
}

func TestCheckAll(t *testing.T) {
	env := fakeEnv(t.TempDir())
	ctx := context.Background()
	list := []Prerequisite{
		{Kind: "os", Value: "linux"},
		{Kind: "arch", Value: "arm64"},
		{Kind: "os", Value: "darwin"},
	}
	ok, reason, err := CheckAll(ctx, env, list)
	if ok || err != nil || reason != "arch arm64: this server is amd64" {
		t.Errorf("CheckAll = %v, %q, %v", ok, reason, err)
	}
	ok, reason, err = CheckAll(ctx, env, list[:1])
	if !ok || err != nil || reason != "" {
		t.Errorf("CheckAll = %v, %q, %v", ok, reason, err)
	}
	ok, _, err = CheckAll(ctx, env, nil)
	if !ok || err != nil {
		t.Errorf("CheckAll(nil) = %v, %v", ok, err)
	}
}

func TestPrerequisiteString(t *testing.T) {
	cases := []struct {
		p    Prerequisite
		want string
	}{
		{Prerequisite{Kind: "os", Value: "linux"}, "os linux"},
		{Prerequisite{Kind: "arch", Value: "amd64"}, "arch amd64"},
		{Prerequisite{Kind: "free_disk", Path: "/", Min: 100 << 20}, "free_disk /: at least 100 MiB"},
		{Prerequisite{Kind: "memory", Min: 2 << 30}, "memory: at least 2.0 GiB"},
		{Prerequisite{Kind: "file_exists", Value: "/etc/x"}, "file_exists /etc/x"},
		{Prerequisite{Kind: "file_absent", Value: "/etc/x"}, "file_absent /etc/x"},
		{Prerequisite{Kind: "file_sha256", Path: "/etc/x", SHA256: "ab"}, "file_sha256 /etc/x: sha256 ab"},
		{Prerequisite{Kind: "env", Name: "LANG"}, "env LANG"},
		{Prerequisite{Kind: "env", Name: "LANG", EnvValue: ptr("C")}, "env LANG=C"},
		{Prerequisite{Kind: "command", Value: "test -x /x", Timeout: DefaultCommandTimeout}, `command "test -x /x"`},
		{Prerequisite{Kind: "command", Value: "test -x /x", Timeout: time.Minute}, `command "test -x /x" (timeout 1m0s)`},
		{Prerequisite{Kind: "agent_version", Value: ">=0.3, <2"}, "agent_version >=0.3, <2"},
	}
	for _, c := range cases {
		if got := c.p.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}

func TestSystemEnv(t *testing.T) {
	env := SystemEnv("0.4.0", t.TempDir())
	if env.GOOS != runtime.GOOS || env.GOARCH != runtime.GOARCH || env.AgentVersion != "0.4.0" {
		t.Errorf("SystemEnv = %+v", env)
	}
	if runtime.GOOS != "linux" {
		t.Skip("free disk and memory are read the Linux way")
	}
	free, err := env.FreeDisk(env.Root)
	if err != nil || free <= 0 {
		t.Errorf("FreeDisk(%s) = %d, %v", env.Root, free, err)
	}
	// A folder that does not exist yet is answered for by its parent.
	if _, err := env.FreeDisk(filepath.Join(env.Root, "not/yet")); err != nil {
		t.Errorf("FreeDisk of a missing folder: %v", err)
	}
	mem, err := env.MemAvailable()
	if err != nil || mem <= 0 {
		t.Errorf("MemAvailable() = %d, %v", mem, err)
	}
	if _, ok := env.LookupEnv("PATH"); !ok {
		t.Error("LookupEnv(PATH): not set")
	}
}
