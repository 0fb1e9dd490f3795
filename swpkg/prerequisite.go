package swpkg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/dustin/go-humanize"
)

// Env is what prerequisite checks read; tests give a fake one.
type Env struct {
	// GOOS and GOARCH are what os and arch compare with.
	GOOS, GOARCH string
	// AgentVersion is the running ted's version, for agent_version.
	AgentVersion string
	// Root is the subscriber's root: relative paths resolve under it, and
	// commands run in it when it is a directory.
	Root string
	// FreeDisk returns the bytes free to unprivileged users on the file
	// system holding path.
	FreeDisk func(path string) (int64, error)
	// MemAvailable returns the memory available for new work, in bytes.
	MemAvailable func() (int64, error)
	// LookupEnv reads an environment variable, as os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// SystemEnv is the Env of this server.
func SystemEnv(agentVersion, root string) Env {
	return Env{
		GOOS:         runtime.GOOS,
		GOARCH:       runtime.GOARCH,
		AgentVersion: agentVersion,
		Root:         root,
		FreeDisk:     freeDisk,
		MemAvailable: memAvailable,
		LookupEnv:    os.LookupEnv,
	}
}

// freeDisk reports the free space of the file system that holds path, or
// would hold it: a folder a package is about to create does not exist yet,
// so the nearest existing parent answers for it.
func freeDisk(path string) (int64, error) {
	p := filepath.Clean(path)
	for {
		n, err := statfsFree(p)
		if !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			return n, err
		}
		p = filepath.Dir(p)
	}
}

// memAvailable reads MemAvailable from /proc/meminfo (Linux).
func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<52 {
			break
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable line in kB")
}

// label names the prerequisite and what it is about, the start of every
// reason: "free_disk /", "command \"test -x /x\"".
func (p Prerequisite) label() string {
	switch p.Kind {
	case "free_disk", "file_sha256":
		return p.Kind + " " + p.Path
	case "memory":
		return p.Kind
	case "env":
		if p.EnvValue != nil {
			return p.Kind + " " + p.Name + "=" + *p.EnvValue
		}
		return p.Kind + " " + p.Name
	case "command":
		return fmt.Sprintf("%s %q", p.Kind, p.Value)
	}
	return p.Kind + " " + p.Value
}

// String returns the prerequisite as written, e.g.
// "free_disk /: at least 100 MiB", "file_exists /etc/x".
func (p Prerequisite) String() string {
	switch p.Kind {
	case "free_disk", "memory":
		return p.label() + ": at least " + humanize.IBytes(uint64(max(p.Min, 0)))
	case "file_sha256":
		return p.label() + ": sha256 " + p.SHA256
	case "command":
		if p.Timeout != 0 && p.Timeout != DefaultCommandTimeout {
			return fmt.Sprintf("%s (timeout %v)", p.label(), p.Timeout)
		}
	}
	return p.label()
}

// Check runs one prerequisite. ok is false with a reason a person can act on,
// naming the prerequisite and the value found, e.g.
// "free_disk /: 52 MiB free, need at least 100 MiB". err is only for a check
// that could not run: ctx ended, Env lacks a function, sh would not start.
func (p Prerequisite) Check(ctx context.Context, env Env) (ok bool, reason string, err error) {
	if err := ctx.Err(); err != nil {
		return false, "", err
	}
	fail := func(format string, args ...any) (bool, string, error) {
		return false, p.label() + ": " + fmt.Sprintf(format, args...), nil
	}
	switch p.Kind {
	case "os":
		if env.GOOS != p.Value {
			return fail("this server runs %s", env.GOOS)
		}
	case "arch":
		if env.GOARCH != p.Value {
			return fail("this server is %s", env.GOARCH)
		}
	case "free_disk":
		if env.FreeDisk == nil {
			return false, "", errors.New("swpkg: Env.FreeDisk is not set")
		}
		at, where := env.resolve(p.Path)
		free, err := env.FreeDisk(at)
		if err != nil {
			return fail("cannot tell the free space%s: %v", where, err)
		}
		if free < p.Min {
			return fail("%s free%s, need at least %s", humanize.IBytes(uint64(max(free, 0))), where, humanize.IBytes(uint64(p.Min)))
		}
	case "memory":
		if env.MemAvailable == nil {
			return false, "", errors.New("swpkg: Env.MemAvailable is not set")
		}
		avail, err := env.MemAvailable()
		if err != nil {
			return fail("cannot tell the available memory: %v", err)
		}
		if avail < p.Min {
			return fail("%s available, need at least %s", humanize.IBytes(uint64(max(avail, 0))), humanize.IBytes(uint64(p.Min)))
		}
	case "file_exists":
		at, where := env.resolve(p.Value)
		if _, err := os.Stat(at); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fail("not found%s", where)
			}
			return fail("%v", err)
		}
	case "file_absent":
		at, where := env.resolve(p.Value)
		_, err := os.Stat(at) // as file_exists: a dangling symlink is absent
		switch {
		case err == nil:
			return fail("present%s", where)
		case !errors.Is(err, fs.ErrNotExist):
			return fail("%v", err)
		}
	case "file_sha256":
		at, where := env.resolve(p.Path)
		sum, err := fileSHA256(ctx, at)
		switch {
		case ctx.Err() != nil:
			return false, "", ctx.Err()
		case errors.Is(err, fs.ErrNotExist):
			return fail("not found%s", where)
		case err != nil:
			return fail("%v", err)
		case sum != p.SHA256:
			return fail("sha256 is %s%s, want %s", sum, where, p.SHA256)
		}
	case "env":
		if env.LookupEnv == nil {
			return false, "", errors.New("swpkg: Env.LookupEnv is not set")
		}
		v, set := env.LookupEnv(p.Name)
		switch {
		case !set:
			return fail("%s is not set", p.Name)
		case p.EnvValue != nil && v != *p.EnvValue:
			return fail("%s is %q", p.Name, v)
		}
	case "command":
		return p.runCommand(ctx, env)
	case "agent_version":
		c, err := semver.NewConstraint(p.Value)
		if err != nil {
			return false, "", fmt.Errorf("%s: %w", p.label(), err)
		}
		v, err := semver.NewVersion(env.AgentVersion)
		if err != nil {
			return fail("this agent's version %q is not a semantic version", env.AgentVersion)
		}
		// A pre-release agent (1.3.0-rc.1) is judged by its release:
		// semver constraints leave pre-releases out unless they name one.
		if core, err := v.SetPrerelease(""); err == nil && v.Prerelease() != "" && !c.Check(v) {
			v = &core
		}
		if !c.Check(v) {
			return fail("this agent is %s", env.AgentVersion)
		}
	default:
		return false, "", fmt.Errorf("swpkg: unknown prerequisite kind %.40q", p.Kind)
	}
	return true, "", nil
}

// CheckAll checks in order and returns the first failure's reason.
func CheckAll(ctx context.Context, env Env, list []Prerequisite) (ok bool, reason string, err error) {
	for _, p := range list {
		if ok, reason, err := p.Check(ctx, env); !ok || err != nil {
			return false, reason, err
		}
	}
	return true, "", nil
}

// resolve puts a relative path under env.Root; where says so for a reason
// (" at /root/etc/x"), and is empty for an absolute path.
func (env Env) resolve(p string) (at, where string) {
	if filepath.IsAbs(p) {
		return p, ""
	}
	at = filepath.Join(env.Root, filepath.FromSlash(p))
	return at, " at " + at
}

// fileSHA256 hashes a file, stopping when ctx ends.
func fileSHA256(ctx context.Context, name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// maxCommandOutput bounds the output of a command prerequisite kept for its
// reason.
const maxCommandOutput = 4 << 10

// runCommand runs a command prerequisite with sh -c in its own process group,
// so a timeout or a cancelled ctx kills everything it started.
func (p Prerequisite) runCommand(ctx context.Context, env Env) (bool, string, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sh", "-c", p.Value)
	if fi, err := os.Stat(env.Root); env.Root != "" && err == nil && fi.IsDir() {
		cmd.Dir = env.Root
	}
	out := &headBuffer{max: maxCommandOutput}
	cmd.Stdout, cmd.Stderr = out, out
	ownProcessGroup(cmd)
	// A background child that keeps the output pipe open must not hold the
	// check past its command's exit.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil || (errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success()):
		return true, "", nil
	case ctx.Err() != nil:
		return false, "", fmt.Errorf("%s: %w", p.label(), ctx.Err())
	case cctx.Err() != nil:
		return false, fmt.Sprintf("%s: timed out after %v", p.label(), timeout), nil
	case errors.As(err, &exit):
		what := fmt.Sprintf("exited %d", exit.ExitCode())
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			what = "killed by signal " + ws.Signal().String()
		}
		if msg := out.summary(); msg != "" {
			what += ": " + msg
		}
		return false, p.label() + ": " + what, nil
	}
	return false, "", fmt.Errorf("%s: %w", p.label(), err)
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *headBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// summary is the output on one line, cut to a length that fits a reason.
func (b *headBuffer) summary() string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(b.buf.String(), "?")), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "..."
	}
	return s
}
