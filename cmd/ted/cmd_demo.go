package main

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"ted/admin"
	"ted/distribution"
	"ted/fleet"
	"ted/pki"
	"ted/publisher"
	"ted/subscriber"
)

//go:embed demodata/site
var demoSite embed.FS

// demoBinaryBytes is the size of the generated binary the demo adds to the
// sample site, so chunking and delta builds have something to show.
const demoBinaryBytes = 8 << 20

type demoOptions struct {
	Dir  string
	Keep bool
}

func (o *demoOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Dir, "dir", "", "work directory (must be empty or absent; default a temporary one)")
	f.BoolVar(&o.Keep, "keep", false, "keep the work directory afterwards")
}

type demoResult struct {
	Dir   string      `json:"dir"`
	Steps []demoStep  `json:"steps"`
	Kept  bool        `json:"kept"`
	Final *demoFigure `json:"final"`
}

type demoStep struct {
	Step   string `json:"step"`
	Detail string `json:"detail"`
}

type demoFigure struct {
	Revisions      int   `json:"revisions"`
	Bytes          int64 `json:"bytes"`
	DeltaNewChunks int   `json:"delta_new_chunks"`
	DeltaNewBytes  int64 `json:"delta_new_bytes"`
}

func newDemoCommand(g *globalOptions) *cobra.Command {
	var opts demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a publisher, two tiers of distributors and three subscribers on loopback, and deliver a sample distribution",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var live io.Writer = cmd.OutOrStdout()
			if g.json {
				live = io.Discard
			}
			res, err := runDemo(cmd.Context(), opts, live, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printResult(cmd.OutOrStdout(), true, res, nil)
			}
			return nil
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

// runDemo sets up a whole TED network on loopback in dir and walks a
// distribution through it, saying what happens at each step on out.
func runDemo(ctx context.Context, opts demoOptions, out, stderr io.Writer) (res *demoResult, err error) {
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ted-demo-"); err != nil {
			return nil, err
		}
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, usageError{fmt.Errorf("--dir %s is not empty; the demo needs a directory of its own", dir)}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	res = &demoResult{Dir: dir, Kept: opts.Keep}
	d := &demo{dir: dir, keep: opts.Keep, out: out, stderr: stderr, res: res}
	defer func() {
		if opts.Keep {
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			if err == nil {
				err = rerr
			}
			return
		}
		if err == nil {
			d.say("removed", "%s with its configs, keys and stores (--keep keeps them)", dir)
		}
	}()
	if err := d.setUp(ctx); err != nil {
		return res, err
	}
	ctx, stop := context.WithCancel(ctx)
	nodesDone := d.startNodes(ctx)
	defer func() {
		stop()
		if nerr := <-nodesDone; nerr != nil && err == nil {
			err = nerr
		}
	}()
	if err := d.walk(ctx); err != nil {
		if !opts.Keep {
			// The logs go with the directory.
			return res, fmt.Errorf("demo: %w (run it again with --keep to keep the node logs)", err)
		}
		return res, fmt.Errorf("demo: %w (node logs in %s)", err, filepath.Join(dir, "logs"))
	}
	if opts.Keep {
		d.say("kept", "configs, keys and stores are in %s; run the network again with:", dir)
		for _, n := range d.nodes {
			fmt.Fprintf(out, "     ted %s run --config %s\n", n.role, n.config)
		}
		fmt.Fprintf(out, "     ted publish --store %s webstack --to %s --ca %s --cert %s --key %s\n",
			d.pubStore, d.dist1Addr, d.path("pki", "ca.crt"), d.path("pki", "pub-1.crt"), d.path("pki", "pub-1.key"))
		d.say("console", "while dist-1 runs, its web console is at http://%s/ and `ted status --config %s` shows the tree", d.console, d.nodes[0].config)
	}
	return res, nil
}

// demo is one run of the demo network.
type demo struct {
	dir         string
	keep        bool // --keep: dir stays afterwards, so it may be shown
	out, stderr io.Writer
	res         *demoResult
	site        string
	pubStore    string
	signKey     string
	dist1Addr   string
	// console is dist-1's status address, where its web console is.
	console string
	nodes   []demoNode
}

// demoNode is a daemon of the demo network, run in this process with its
// own store, QUIC endpoint and admin socket, exactly as `ted ... run` would.
type demoNode struct {
	name, role, parent, config, dataDir, root string
}

func (d *demo) path(elem ...string) string { return filepath.Join(append([]string{d.dir}, elem...)...) }

func (d *demo) say(step, format string, args ...any) {
	detail := fmt.Sprintf(format, args...)
	d.res.Steps = append(d.res.Steps, demoStep{Step: step, Detail: detail})
	fmt.Fprintf(d.out, "== %-9s %s\n", step, detail)
}

// setUp creates the keys, certificates, sample content and configs.
func (d *demo) setUp(ctx context.Context) error {
	pkiDir := d.path("pki")
	if _, err := pki.InitCA(pkiDir, false); err != nil {
		return err
	}
	names := []struct {
		name string
		role pki.Role
	}{{"pub-1", pki.RolePublisher}, {"dist-1", pki.RoleDistributor}, {"dist-2", pki.RoleDistributor},
		{"web-01", pki.RoleSubscriber}, {"web-02", pki.RoleSubscriber}, {"web-03", pki.RoleSubscriber}}
	for _, n := range names {
		if _, err := pki.Issue(pkiDir, n.name, n.role, nil, false); err != nil {
			return err
		}
	}
	d.signKey = d.path("pki", "publisher.key")
	pub, err := pki.GenerateSigningKey(d.signKey, false)
	if err != nil {
		return err
	}
	d.say("keys", "CA, certificates for pub-1, dist-1, dist-2, web-01..03, signing key %s", distribution.KeyID(pub))
	d.site = d.path("site")
	if err := writeDemoSite(d.site); err != nil {
		return err
	}
	d.say("content", "sample web stack: pages, config, a control script and an %s binary", humanBytes(demoBinaryBytes))

	ports, err := freeUDPPorts(2)
	if err != nil {
		return err
	}
	d.dist1Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d.console = ln.Addr().String()
	ln.Close()
	dist2Addr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	tls := func(name string) string {
		return fmt.Sprintf("tls: {ca: pki/ca.crt, cert: pki/%s.crt, key: pki/%s.key}\n", name, name)
	}
	configs := []struct {
		node demoNode
		text string
	}{
		{demoNode{name: "dist-1", role: "distributor"}, "name: dist-1\nlisten: " + d.dist1Addr + "\nstatus_listen: " + d.console + "\ndata_dir: var/dist-1\n" + tls("dist-1") +
			"trust: [pki/publisher.key.pub]\nchannels:\n  web:\n    publishers: [pub-1]\n    children: [dist-2, web-03]\n"},
		{demoNode{name: "dist-2", role: "distributor", parent: "dist-1"}, "name: dist-2\nlisten: " + dist2Addr + "\ndata_dir: var/dist-2\n" + tls("dist-2") +
			"parents: [" + d.dist1Addr + "]\ntrust: [pki/publisher.key.pub]\nchannels:\n  web:\n    children: [web-01, web-02, web-03]\n"},
	}
	for _, sub := range []struct{ name, parents, parent string }{
		{"web-01", dist2Addr, "dist-2"}, {"web-02", dist2Addr, "dist-2"},
		// web-03 prefers dist-2 and falls back to dist-1 if dist-2 is down.
		{"web-03", dist2Addr + ", " + d.dist1Addr, "dist-2"},
	} {
		configs = append(configs, struct {
			node demoNode
			text string
		}{
			demoNode{name: sub.name, role: "subscriber", parent: sub.parent, root: d.path("srv", sub.name)},
			"name: " + sub.name + "\nparents: [" + sub.parents + "]\ndata_dir: var/" + sub.name + "\n" + tls(sub.name) +
				"channels: [web]\ntrust: [pki/publisher.key.pub]\nroot: srv/" + sub.name + "\n",
		})
	}
	for _, c := range configs {
		n := c.node
		n.config = d.path(n.name + ".yaml")
		n.dataDir = d.path("var", n.name)
		if err := os.WriteFile(n.config, []byte(c.text), 0o644); err != nil {
			return err
		}
		d.nodes = append(d.nodes, n)
	}
	network := fmt.Sprintf("dist-1 (tier 1, %s) <- dist-2 (tier 2, %s) <- web-01, web-02, web-03", d.dist1Addr, dist2Addr)
	if d.keep {
		network += "; configs in " + d.dir
	}
	d.say("network", "%s", network)
	return os.MkdirAll(d.path("logs"), 0o755)
}

// freeUDPPorts finds n UDP ports free on loopback now.
func freeUDPPorts(n int) ([]int, error) {
	var ports []int
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

// startNodes runs every daemon in this process until ctx ends; the channel
// gives the first error once all have stopped.
func (d *demo) startNodes(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range d.nodes {
		g.Go(func() error {
			logFile, err := os.Create(d.path("logs", n.name+".log"))
			if err != nil {
				return err
			}
			defer logFile.Close()
			opts := daemonOptions{config: n.config, log: logOptions{format: "text", level: "info"}}
			if n.role == "distributor" {
				err = runDistributor(gctx, opts, logFile)
			} else {
				err = runSubscriber(gctx, opts, logFile)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			return nil
		})
	}
	go func() { done <- g.Wait() }()
	return done
}

// walk publishes a revision and a patch through the network and checks
// that every subscriber extracted each, identical to the source.
func (d *demo) walk(ctx context.Context) error {
	d.pubStore = d.path("var", "publisher")
	build := distBuildOptions{Store: d.pubStore, Name: "webstack", From: d.site, Version: "2.1.0",
		Channels: []string{"web"}, SignKey: d.signKey, Keep: 3}
	first, err := runDistBuild(ctx, build, d.stderr)
	if err != nil {
		return err
	}
	d.say("build", "webstack@%d: %d files, %s in %d chunks (%s stored after compression)",
		first.Revision, first.Files, humanBytes(first.Bytes), first.Chunks, humanBytes(first.NewBytes))
	pushed, err := d.publish(ctx)
	if err != nil {
		return err
	}
	d.say("publish", "webstack@%d to dist-1: %d chunks, %s sent", pushed.Revision, pushed.SentChunks, humanBytes(pushed.SentBytes))
	if err := d.waitExtracted(ctx, first.Revision); err != nil {
		return err
	}
	d.say("delivered", "dist-1 -> dist-2 -> web-01, web-02, web-03: each verified the signature and every chunk, extracted, and matches the source")

	if err := patchDemoSite(d.site); err != nil {
		return err
	}
	build.Version = "2.1.1"
	second, err := runDistBuild(ctx, build, d.stderr)
	if err != nil {
		return err
	}
	d.say("patch", "webstack@%d (2.1.1): a patched binary and a config line; %d of %d chunks new", second.Revision, second.NewChunks, second.Chunks)
	pushed, err = d.publish(ctx)
	if err != nil {
		return err
	}
	d.say("publish", "webstack@%d: only the changed chunks travel: %d chunks, %s of %s", pushed.Revision, pushed.SentChunks, humanBytes(pushed.SentBytes), humanBytes(second.Bytes))
	if err := d.waitExtracted(ctx, second.Revision); err != nil {
		return err
	}
	d.say("delivered", "webstack@%d extracted on every subscriber, identical to the source", second.Revision)
	d.res.Final = &demoFigure{Revisions: 2, Bytes: second.Bytes, DeltaNewChunks: pushed.SentChunks, DeltaNewBytes: pushed.SentBytes}
	if err := d.rollback(ctx); err != nil {
		return err
	}
	return d.printStatus(ctx)
}

// rollback undoes the patch on the last subscriber, as `ted subscriber
// rollback` would, and checks its tree is the first release again.
func (d *demo) rollback(ctx context.Context) error {
	n := d.nodes[len(d.nodes)-1]
	var res rollbackResult
	if err := admin.Post(ctx, daemonSocket(n.dataDir), "rollback", url.Values{"name": {"webstack"}}, &res); err != nil {
		return fmt.Errorf("%s: rollback: %w", n.name, err)
	}
	first := d.path("site-2.1.0")
	if err := writeDemoSite(first); err != nil {
		return err
	}
	if err := sameTree(first, filepath.Join(n.root, "webstack")); err != nil {
		return fmt.Errorf("%s: tree after the rollback differs from webstack 2.1.0: %w", n.name, err)
	}
	d.say("rollback", "%s: webstack@%d undone, @%d (%s) back file for file; @%d stays rolled back until a newer revision arrives",
		n.name, res.RolledBack.From, res.RolledBack.To, res.RolledBack.ToVersion, res.RolledBack.From)
	return nil
}

func (d *demo) publish(ctx context.Context) (publisher.PushResult, error) {
	var res publisher.PushResult
	var buf strings.Builder
	err := runPublish(ctx, publishOptions{
		store: d.pubStore, to: d.dist1Addr, json: true,
		tls: tlsFiles{CA: d.path("pki", "ca.crt"), Cert: d.path("pki", "pub-1.crt"), Key: d.path("pki", "pub-1.key")},
	}, "webstack", &buf, d.stderr)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal([]byte(buf.String()), &res)
}

// demoDeadline bounds the wait for delivery: on loopback it takes well
// under a second; anything near this is a fault.
const demoDeadline = 60 * time.Second

// waitExtracted waits until every subscriber has extracted rev and its
// tree equals the source.
func (d *demo) waitExtracted(ctx context.Context, rev uint64) error {
	deadline := time.Now().Add(demoDeadline)
	for _, n := range d.nodes {
		if n.role != "subscriber" {
			continue
		}
		for {
			st, err := d.subscriberStatus(ctx, n)
			if err == nil && revisionState(st, "webstack", rev) == subscriber.StateExtracted {
				break
			}
			if err == nil && revisionState(st, "webstack", rev) == subscriber.StateFailed {
				return fmt.Errorf("%s: webstack@%d failed", n.name, rev)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s has not extracted webstack@%d after %v (last state %q, err %v)", n.name, rev, demoDeadline, revisionState(st, "webstack", rev), err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if err := sameTree(d.site, filepath.Join(n.root, "webstack")); err != nil {
			return fmt.Errorf("%s: extracted tree differs from the source: %w", n.name, err)
		}
	}
	return nil
}

func (d *demo) subscriberStatus(ctx context.Context, n demoNode) (subscriber.Status, error) {
	var st subscriber.Status
	err := admin.Get(ctx, daemonSocket(n.dataDir), "/api/status", &st)
	return st, err
}

// revisionState returns the state of name@rev in a subscriber's status.
func revisionState(st subscriber.Status, name string, rev uint64) string {
	for _, dist := range st.Distributions {
		if dist.Name != name {
			continue
		}
		for _, r := range dist.Revisions {
			if r.Revision == rev {
				return r.State
			}
		}
	}
	return ""
}

// printStatus prints the final table: every node, its parent and what it
// holds.
func (d *demo) printStatus(ctx context.Context) error {
	// Every tier reports its subtree up within a second or so: wait until
	// the top's view holds every subscriber's last state (web-03's
	// rollback included), then show it as `ted status` does.
	top := d.nodes[0]
	var v fleet.View
	deadline := time.Now().Add(demoDeadline)
	for {
		// A new value each time: JSON decoded into the last one would
		// merge its maps (a rollout's counts) with the new ones.
		v = fleet.View{}
		if err := admin.Get(ctx, daemonSocket(top.dataDir), "/api/fleet", &v); err != nil {
			return err
		}
		if d.viewComplete(&v) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the view at %s did not show every subscriber's last state within %v", top.name, demoDeadline)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	d.say("status", "what `ted status --config %s` shows at the top: every tier reports its subtree up", top.config)
	p := &printer{w: d.out}
	printRollouts(p, &v)
	p.linef("")
	printTree(p, &v)
	p.linef("")
	return p.err
}

// viewComplete reports whether v shows every subscriber of the demo with
// the state its own status says.
func (d *demo) viewComplete(v *fleet.View) bool {
	byName := map[string]*fleet.Node{}
	for i := range v.Nodes {
		byName[v.Nodes[i].Name] = &v.Nodes[i]
	}
	for _, n := range d.nodes {
		if n.role != "subscriber" {
			continue
		}
		got := byName[n.name]
		st, err := d.subscriberStatus(context.Background(), n)
		if got == nil || err != nil {
			return false
		}
		want := map[string]string{}
		for _, dist := range st.Distributions {
			for _, r := range dist.Revisions {
				want[fmt.Sprintf("%s@%d", dist.Name, r.Revision)] = r.State
			}
		}
		have := map[string]string{}
		for _, r := range got.Distributions {
			have[fmt.Sprintf("%s@%d", r.Name, r.Revision)] = r.State
		}
		if !maps.Equal(want, have) {
			return false
		}
	}
	return true
}

// writeDemoSite writes the embedded sample site to dir, with a generated
// binary and a symlink.
func writeDemoSite(dir string) error {
	const root = "demodata/site"
	err := fs.WalkDir(demoSite, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dest := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p, root)))
		if d.IsDir() {
			return os.MkdirAll(dest, 0o755)
		}
		b, err := demoSite.ReadFile(p)
		if err != nil {
			return err
		}
		// embed keeps no modes: what lives in bin/ is executable.
		mode := os.FileMode(0o644)
		if path.Base(path.Dir(p)) == "bin" {
			mode = 0o755
		}
		return os.WriteFile(dest, b, mode)
	})
	if err != nil {
		return fmt.Errorf("write demo site: %w", err)
	}
	bin := make([]byte, demoBinaryBytes)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range bin {
		bin[i] = byte(r.Uint32() >> 24)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "webstackd"), bin, 0o755); err != nil {
		return err
	}
	return os.Symlink("htdocs/index.html", filepath.Join(dir, "index.html"))
}

// patchDemoSite changes a few bytes of the binary and one config line, as a
// patch release would.
func patchDemoSite(dir string) error {
	bin := filepath.Join(dir, "bin", "webstackd")
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	copy(b[len(b)/3:], "patched: fix CVE-2026-0001")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "conf", "webstack.conf")
	c, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	return os.WriteFile(conf, []byte(strings.Replace(string(c), "workers   = 8", "workers   = 16", 1)), 0o644)
}

// sameTree compares two trees: paths, types, permission bits, file content
// and symlink targets.
func sameTree(a, b string) error {
	list := func(root string) (map[string]string, error) {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			desc := info.Mode().String()
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				t, err := os.Readlink(p)
				if err != nil {
					return err
				}
				desc += " -> " + t
			case info.Mode().IsRegular():
				c, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += " " + distribution.SumChunk(c).String()
			}
			if rel != "." {
				out[filepath.ToSlash(rel)] = desc
			}
			return nil
		})
		return out, err
	}
	la, err := list(a)
	if err != nil {
		return err
	}
	lb, err := list(b)
	if err != nil {
		return err
	}
	for p, da := range la {
		if db, ok := lb[p]; !ok || da != db {
			return fmt.Errorf("%s: %q vs %q", p, da, db)
		}
	}
	if len(la) != len(lb) {
		return fmt.Errorf("%d entries vs %d", len(la), len(lb))
	}
	return nil
}
