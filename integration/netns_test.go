//go:build linux

package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A lab is a small network of Linux network namespaces for one test: a
// "switch" namespace holding a bridge, and one namespace per host, joined
// to the bridge by a veth pair and holding one address in 10.231.1.0/24.
// Nothing is created in the namespace the test runs in: every interface,
// address and route is inside a namespace the lab made, and the lab
// deletes them all in t.Cleanup, failed test or not. Processes run inside
// a host with `ip netns exec` (node.netns, or lab.command); files and unix
// sockets (admin sockets) are shared with the test as usual.
//
// Links between hosts are cut and healed by named cuts (cut, heal,
// healAll): a pair of hosts is cut while any cut holds it. A cut is silent
// by default — each side's neighbour entry for the other is pinned to a
// MAC address nobody has, so the frames leave and vanish, as on a broken
// link, and neither side is told — or loud: a blackhole route on each
// side, so every send fails at once with an error (EINVAL), as when a
// route is withdrawn.
type lab struct {
	t *testing.T
	// prefix starts the name of every namespace of this lab:
	// tedlab-PID-SEQ-.
	prefix string
	sw     string // the switch namespace

	mu    sync.Mutex
	hosts []*labHost
	// cuts maps each cut's name to the pairs it holds; applied maps each
	// pair cut now to how (loud or not).
	cuts    map[string]labCut
	applied map[labPair]bool
}

// labHost is one host of a lab.
type labHost struct {
	name string
	ns   string // its namespace
	ip   string // its address, without the prefix length
	port string // its veth's name in the switch namespace
}

// labPair is two hosts, by name, in order.
type labPair [2]string

func pairOf(a, b *labHost) labPair {
	if a.name > b.name {
		a, b = b, a
	}
	return labPair{a.name, b.name}
}

type labCut struct {
	loud  bool
	pairs []labPair
}

// labPrefix starts the name of every lab namespace, of every run.
const labPrefix = "tedlab-"

// labDevice is every host's interface; labBogusMAC the address a silent cut
// sends to.
const (
	labDevice   = "eth0"
	labBogusMAC = "02:00:00:00:de:ad"
)

var labSeq atomic.Int64

// newLab makes the switch namespace of a lab, after deleting the lab
// namespaces of runs whose process is gone. Where namespaces cannot be
// made (not root, no ip command) it skips the test, or fails it when CI is
// "true".
func newLab(t *testing.T) *lab {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		reason := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("network namespaces are needed (CI=true): %s", reason)
		}
		t.Skipf("network namespaces unavailable: %s", reason)
	}
	if os.Geteuid() != 0 {
		unavailable("not root (euid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("no ip command: %v", err)
	}
	removeDeadLabs(t)
	l := &lab{
		t:       t,
		prefix:  fmt.Sprintf("%s%d-%d-", labPrefix, os.Getpid(), labSeq.Add(1)),
		cuts:    map[string]labCut{},
		applied: map[labPair]bool{},
	}
	l.sw = l.prefix + "sw"
	if out, err := exec.Command("ip", "netns", "add", l.sw).CombinedOutput(); err != nil {
		unavailable("ip netns add %s: %v: %s", l.sw, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(l.cleanup)
	l.ip("-n", l.sw, "link", "set", "lo", "up")
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	return l
}

// removeDeadLabs deletes the lab namespaces of test processes that are
// gone (a run killed before its cleanup); those of live processes, other
// runs going on now, are left alone.
func removeDeadLabs(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), labPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("deleting the left-over namespace %s: %v: %s", e.Name(), err, out)
		} else {
			t.Logf("deleted the left-over namespace %s (process %d is gone)", e.Name(), pid)
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ip runs the ip command and fails the test if it fails.
func (l *lab) ip(args ...string) {
	l.t.Helper()
	if err := runIP(args...); err != nil {
		l.t.Fatal(err)
	}
}

func runIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// host makes a host: its namespace, with lo up and the veth to the switch
// holding 10.231.1.(10+i)/24.
func (l *lab) host(name string) *labHost {
	l.t.Helper()
	l.mu.Lock()
	i := len(l.hosts)
	if i >= 200 {
		l.mu.Unlock()
		l.t.Fatalf("lab: too many hosts")
	}
	h := &labHost{name: name, ns: l.prefix + name, ip: fmt.Sprintf("10.231.1.%d", 10+i), port: fmt.Sprintf("p%d", i)}
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	l.ip("netns", "add", h.ns)
	l.ip("-n", h.ns, "link", "set", "lo", "up")
	// Made inside the switch namespace, the other end moved straight
	// into the host's: the test's own namespace never holds either.
	l.ip("-n", l.sw, "link", "add", h.port, "type", "veth", "peer", "name", labDevice, "netns", h.ns)
	l.ip("-n", l.sw, "link", "set", h.port, "master", "br0")
	l.ip("-n", l.sw, "link", "set", h.port, "up")
	l.ip("-n", h.ns, "addr", "add", h.ip+"/24", "dev", labDevice)
	l.ip("-n", h.ns, "link", "set", labDevice, "up")
	return h
}

// cleanup deletes every namespace of the lab. A process still running in
// one keeps it alive, without its name, until it exits.
func (l *lab) cleanup() {
	l.mu.Lock()
	hosts := slices.Clone(l.hosts)
	l.mu.Unlock()
	for _, ns := range append(hostNamespaces(hosts), l.sw) {
		if err := runIP("netns", "del", ns); err != nil {
			l.t.Errorf("lab cleanup: %v", err)
		}
	}
}

func hostNamespaces(hosts []*labHost) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, h.ns)
	}
	return out
}

// command is name args run inside h's namespace.
func (l *lab) command(h *labHost, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
}

// cut cuts every pair between a host of from and a host of to (both
// ways), under name, until heal(name) or healAll. A name already in use is
// a test bug.
func (l *lab) cut(name string, loud bool, from, to []*labHost) {
	l.t.Helper()
	var pairs []labPair
	for _, a := range from {
		for _, b := range to {
			if a != b && !slices.Contains(pairs, pairOf(a, b)) {
				pairs = append(pairs, pairOf(a, b))
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, dup := l.cuts[name]; dup {
		l.t.Fatalf("lab: cut %q already made", name)
	}
	l.cuts[name] = labCut{loud: loud, pairs: pairs}
	for _, p := range pairs {
		if _, done := l.applied[p]; done {
			continue
		}
		if err := l.setPair(p, loud, true); err != nil {
			l.t.Fatal(err)
		}
		l.applied[p] = loud
	}
}

// isolate cuts h from every other host.
func (l *lab) isolate(name string, loud bool, h *labHost) {
	l.t.Helper()
	l.cut(name, loud, []*labHost{h}, l.others(h))
}

// split cuts the hosts of a from those of b.
func (l *lab) split(name string, loud bool, a, b []*labHost) {
	l.t.Helper()
	l.cut(name, loud, a, b)
}

// others returns every host but h.
func (l *lab) others(h *labHost) []*labHost {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*labHost
	for _, o := range l.hosts {
		if o != h {
			out = append(out, o)
		}
	}
	return out
}

// heal removes the cut name; the pairs no other cut holds are joined again.
// An unknown name is nothing to do (healAll came first).
func (l *lab) heal(name string) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.cuts[name]
	if !ok {
		return
	}
	delete(l.cuts, name)
	for _, p := range c.pairs {
		held := false
		for _, other := range l.cuts {
			held = held || slices.Contains(other.pairs, p)
		}
		if !held {
			l.restore(p)
		}
	}
}

// healAll removes every cut.
func (l *lab) healAll() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.cuts)
	for p := range l.applied {
		l.restore(p)
	}
}

// restore joins the pair again; mu is held.
func (l *lab) restore(p labPair) {
	l.t.Helper()
	loud, ok := l.applied[p]
	if !ok {
		return
	}
	if err := l.setPair(p, loud, false); err != nil {
		l.t.Error(err)
		return
	}
	delete(l.applied, p)
}

// cutNow returns the names of the cuts in force, sorted.
func (l *lab) cutNow() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for name := range l.cuts {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// linked reports whether the lab lets a and b talk (no cut holds them).
func (l *lab) linked(a, b *labHost) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, cut := l.applied[pairOf(a, b)]
	return !cut
}

// setPair cuts (or heals) both directions of p; mu is held.
func (l *lab) setPair(p labPair, loud, cut bool) error {
	a, b := l.byName(p[0]), l.byName(p[1])
	var errs []error
	for _, d := range [][2]*labHost{{a, b}, {b, a}} {
		from, to := d[0], d[1]
		var args []string
		switch {
		case loud && cut:
			args = []string{"-n", from.ns, "route", "add", "blackhole", to.ip + "/32"}
		case loud:
			args = []string{"-n", from.ns, "route", "del", "blackhole", to.ip + "/32"}
		case cut:
			args = []string{"-n", from.ns, "neigh", "replace", to.ip, "lladdr", labBogusMAC, "dev", labDevice, "nud", "permanent"}
		default:
			args = []string{"-n", from.ns, "neigh", "del", to.ip, "dev", labDevice}
		}
		if err := runIP(args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *lab) byName(name string) *labHost {
	for _, h := range l.hosts {
		if h.name == name {
			return h
		}
	}
	l.t.Fatalf("lab: no host %s", name)
	return nil
}

// inNetns runs fn on an OS thread switched into the namespace ns: the
// sockets fn opens belong to ns for good, and may be used from any thread
// afterwards. The thread is switched back before it serves other
// goroutines; if it cannot be, it is never unlocked, and so ends with fn's
// goroutine (Go's runtime starts no thread from a locked one).
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := setns(self); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
			return // still locked: the thread goes with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// listenUDP opens a UDP socket on h's address, inside h's namespace.
func (l *lab) listenUDP(h *labHost) *net.UDPConn {
	l.t.Helper()
	var c *net.UDPConn
	err := inNetns(h.ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(h.ip)})
		return err
	})
	if err != nil {
		l.t.Fatalf("listen on %s in %s: %v", h.ip, h.ns, err)
	}
	l.t.Cleanup(func() { _ = c.Close() })
	return c
}

// reaches reports whether a datagram from a gets to b within half a
// second, trying a few times (the first may wait for ARP).
func reaches(from, to *net.UDPConn) bool {
	token := fmt.Sprintf("probe %d", time.Now().UnixNano())
	buf := make([]byte, 64)
	for range 3 {
		// A loud cut fails the send itself: unreachable.
		if _, err := from.WriteToUDP([]byte(token), to.LocalAddr().(*net.UDPAddr)); err != nil {
			return false
		}
		_ = to.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		for {
			n, _, err := to.ReadFromUDP(buf)
			if err != nil {
				break // this try timed out
			}
			if string(buf[:n]) == token {
				return true
			}
		}
	}
	return false
}

// pause stops the node's process (SIGSTOP) and waits until the kernel says
// it is stopped.
func (n *node) pause() {
	n.nw.t.Helper()
	pid := n.pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		n.nw.t.Fatalf("SIGSTOP %s: %v", n.name, err)
	}
	waitFor(n.nw.t, n.name+" stopped", func() (bool, string) {
		st := procState(pid)
		return st == "T", "state " + st
	})
}

// resume continues a paused node (SIGCONT).
func (n *node) resume() {
	n.nw.t.Helper()
	pid := n.pid()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		n.nw.t.Fatalf("SIGCONT %s: %v", n.name, err)
	}
	waitFor(n.nw.t, n.name+" running again", func() (bool, string) {
		st := procState(pid)
		return st != "T" && st != "t", "state " + st
	})
}

// pid is the running process's id; in a namespace too it is ted's own,
// as ip execs it.
func (n *node) pid() int {
	n.nw.t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		n.nw.t.Fatalf("%s is not running", n.name)
	}
	return p.cmd.Process.Pid
}

// procState is the state letter of /proc/PID/stat (R, S, T, Z, …), or
// why it could not be read.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err.Error()
	}
	// pid (comm) state …: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "unreadable: " + s
	}
	return s[i+2 : i+3]
}

// netnsOf is the namespace a process is in ("net:[INODE]").
func netnsOf(pid int) string {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err.Error()
	}
	return link
}

// namedNetns is what netnsOf says of a process in the named namespace.
func namedNetns(t *testing.T, ns string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// TestNetnsLab checks the lab itself: hosts reach each other through the
// switch; a cut, silent or loud, stops both directions of exactly the
// pairs it names and heals; cuts overlap; a process run in a host is in
// its namespace with its own pid, and SIGSTOP and SIGCONT stop and
// continue it; cleanup leaves no namespace behind.
func TestNetnsLab(t *testing.T) {
	t.Parallel()
	var names []string
	t.Run("lab", func(t *testing.T) {
		l := newLab(t)
		a, b, c := l.host("a"), l.host("b"), l.host("c")
		names = append(hostNamespaces([]*labHost{a, b, c}), l.sw)
		conns := map[*labHost]*net.UDPConn{a: l.listenUDP(a), b: l.listenUDP(b), c: l.listenUDP(c)}
		hosts := []*labHost{a, b, c}
		// expect checks every direction between the hosts against want,
		// the pairs that must be cut.
		expect := func(when string, cut ...labPair) {
			t.Helper()
			for _, x := range hosts {
				for _, y := range hosts {
					if x == y {
						continue
					}
					want := !slices.Contains(cut, pairOf(x, y))
					if got := reaches(conns[x], conns[y]); got != want {
						t.Errorf("%s: %s -> %s reaches: %v, want %v", when, x.name, y.name, got, want)
					}
					if l.linked(x, y) != want {
						t.Errorf("%s: lab says %s-%s linked: %v, want %v", when, x.name, y.name, !want, want)
					}
				}
			}
		}
		expect("at first")
		for _, loud := range []bool{false, true} {
			mode := fmt.Sprintf("loud=%v", loud)
			l.isolate("a-alone", loud, a)
			expect(mode+", a isolated", pairOf(a, b), pairOf(a, c))
			l.cut("b-c", loud, []*labHost{b}, []*labHost{c})
			expect(mode+", a isolated and b-c cut", pairOf(a, b), pairOf(a, c), pairOf(b, c))
			l.heal("a-alone")
			expect(mode+", b-c cut", pairOf(b, c))
			l.split("ab|c", loud, []*labHost{a, b}, []*labHost{c})
			l.heal("b-c") // a-c and b-c are still held by the split
			expect(mode+", split ab|c", pairOf(a, c), pairOf(b, c))
			if got := l.cutNow(); !slices.Equal(got, []string{"ab|c"}) {
				t.Errorf("%s: cuts %v, want [ab|c]", mode, got)
			}
			l.healAll()
			expect(mode + ", healed")
		}

		// A process in a host: ip execs it, so the pid is its own, in the
		// host's namespace; it stops and continues.
		cmd := l.command(b, "sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() {
			_ = cmd.Process.Kill()
			<-done
		}()
		pid := cmd.Process.Pid
		waitFor(t, "sleep exec'd by ip in b's namespace", func() (bool, string) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			got, want := netnsOf(pid), namedNetns(t, b.ns)
			return strings.TrimSpace(string(comm)) == "sleep" && got == want,
				fmt.Sprintf("comm %q, namespace %s, want %s", strings.TrimSpace(string(comm)), got, want)
		})
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "sleep stopped", func() (bool, string) { st := procState(pid); return st == "T", st })
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "sleep continued", func() (bool, string) { st := procState(pid); return st == "S", st })
	})
	if names == nil {
		return // skipped, or failed before making the hosts
	}
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still there after cleanup: %v", ns, err)
		}
	}
}
