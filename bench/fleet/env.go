package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"ted/pki"
	"ted/transport"
)

// Names of what the fleet sets up.
const (
	distName   = "dist-1"
	pubName    = "pub-1"
	channel    = "fleet"
	group      = "fleet"
	distrib    = "fleet-app"
	simPattern = "sim-%05d"
)

// env is what every run of the fleet shares: the ted binary, a CA, the
// publisher's certificate, signing key and store holding the revision to
// publish, and the certificates of the simulated subscribers (signed in
// memory, one each).
type env struct {
	ted, dir string
	caDir    string
	ca       *pki.CA
	pool     *x509.CertPool
	signKey  string
	store    string
	// rev is the revision built into store.
	rev revKey
	// chunks is its number of distinct chunks.
	chunks int

	mu    sync.Mutex
	creds []*transport.Credentials
}

// buildResult is the part of `ted dist build --json` that the fleet reads.
type buildResult struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Chunks   int    `json:"chunks"`
}

// newEnv makes the CA (pki.InitCA), the distributor's and publisher's
// certificates, a signing key (`ted pki signing-key`), and a revision of
// payload random bytes in one file (`ted dist build`) in dir.
func newEnv(ctx context.Context, ted, dir string, payload int) (*env, error) {
	e := &env{ted: ted, dir: dir, caDir: filepath.Join(dir, "pki")}
	if _, err := pki.InitCA(e.caDir, false); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(e.caDir)
	if err != nil {
		return nil, err
	}
	e.ca = ca
	e.pool = x509.NewCertPool()
	e.pool.AddCert(ca.Cert)
	for _, spec := range []pki.Spec{
		{Name: distName, Role: pki.RoleDistributor, Hosts: []string{"127.0.0.1"}},
		{Name: pubName, Role: pki.RolePublisher},
	} {
		if _, err := pki.IssueSpec(e.caDir, spec, false); err != nil {
			return nil, err
		}
	}
	e.signKey = filepath.Join(e.caDir, "publisher.key")
	if _, err := e.tedRun(ctx, "pki", "signing-key", "--out", e.signKey); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, err
	}
	data := make([]byte, payload)
	if _, err := rand.Read(data); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "payload.bin"), data, 0o644); err != nil {
		return nil, err
	}
	e.store = filepath.Join(dir, "publisher-store")
	out, err := e.tedRun(ctx, "dist", "build", "--store", e.store, "--name", distrib, "--from", src,
		"--version", "1.0.0", "--channel", channel, "--sign-key", e.signKey, "--json")
	if err != nil {
		return nil, err
	}
	var res buildResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("ted dist build --json: %w: %s", err, out)
	}
	e.rev, e.chunks = revKey{res.Name, res.Revision}, res.Chunks
	return e, nil
}

// tedRun runs ted with args and returns its standard output; an error
// carries its standard error.
func (e *env) tedRun(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, e.ted, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ted %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// credentials returns the credentials of the first n simulated
// subscribers, signing those not made yet: an ECDSA P-256 key and a
// certificate (role subscriber, group fleet) each, on every core.
func (e *env) credentials(n int) ([]*transport.Credentials, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	have := len(e.creds)
	if n <= have {
		return e.creds[:n], nil
	}
	e.creds = append(e.creds, make([]*transport.Credentials, n-have)...)
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := have; i < n; i++ {
		g.Go(func() error {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			name := simName(i)
			cert, err := e.ca.Sign(pki.Spec{Name: name, Role: pki.RoleSubscriber, Groups: []string{group}}, key.Public())
			if err != nil {
				return err
			}
			cred, err := transport.NewCredentials(e.pool, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, pki.RoleSubscriber)
			if err != nil {
				return err
			}
			e.creds[i] = cred
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		e.creds = e.creds[:have]
		return nil, err
	}
	return e.creds[:n], nil
}

func simName(i int) string { return fmt.Sprintf(simPattern, i) }

// distributor is one run of `ted distributor run`.
type distributor struct {
	config, dataDir, logPath string
	addr, statusAddr         string
	// children is how the config names the fleet: "group:fleet" or "names".
	children string
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
}

// startDistributor writes a config for a fresh distributor in dir whose one
// channel lets pub-1 publish and the first n sims receive, and starts it.
// The sims are named by their group when this ted accepts `group:NAME` in
// children (`ted config check` says so), else one by one.
func (e *env) startDistributor(ctx context.Context, dir string, n int) (*distributor, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := &distributor{config: filepath.Join(dir, distName+".yaml"), dataDir: filepath.Join(dir, "var"), logPath: filepath.Join(dir, distName+".log")}
	for try := 1; ; try++ {
		var err error
		if d.addr, err = freePort("udp"); err != nil {
			return nil, err
		}
		if d.statusAddr, err = freePort("tcp"); err != nil {
			return nil, err
		}
		if err := e.writeConfig(ctx, d, n); err != nil {
			return nil, err
		}
		err = d.start(ctx, e.ted)
		if err == nil {
			return d, nil
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
}

// writeConfig writes d's config, children by group if ted accepts it.
func (e *env) writeConfig(ctx context.Context, d *distributor, n int) error {
	write := func(children []string) error {
		values := map[string]any{
			"name":          distName,
			"listen":        d.addr,
			"status_listen": d.statusAddr,
			"data_dir":      d.dataDir,
			"tls": map[string]string{
				"ca":   filepath.Join(e.caDir, "ca.crt"),
				"cert": filepath.Join(e.caDir, distName+".crt"),
				"key":  filepath.Join(e.caDir, distName+".key"),
			},
			"trust":    []string{e.signKey + ".pub"},
			"channels": map[string]any{channel: map[string]any{"publishers": []string{pubName}, "children": children}},
		}
		// JSON is YAML.
		data, err := json.MarshalIndent(values, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(d.config, data, 0o644)
	}
	if err := write([]string{"group:" + group}); err != nil {
		return err
	}
	if _, err := e.tedRun(ctx, "config", "check", d.config); err == nil {
		d.children = "group:" + group
		return nil
	}
	names := make([]string, n)
	for i := range names {
		names[i] = simName(i)
	}
	if err := write(names); err != nil {
		return err
	}
	if _, err := e.tedRun(ctx, "config", "check", d.config); err != nil {
		return err
	}
	d.children = "names"
	return nil
}

// start runs the distributor and waits for its "distributor running" line.
func (d *distributor) start(ctx context.Context, ted string) error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	d.cmd = exec.Command(ted, "distributor", "run", "--config", d.config)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// It must not outlive a generator that dies without cleaning up.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	d.done = make(chan struct{})
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-d.done:
			return fmt.Errorf("distributor exited at start (%v): %s", d.waitErr, d.log())
		case <-deadline.C:
			d.stop()
			return fmt.Errorf("distributor not running after 60 s: %s", d.log())
		case <-ctx.Done():
			d.stop()
			return ctx.Err()
		case <-tick.C:
		}
		if strings.Contains(d.log(), "distributor running") {
			return nil
		}
	}
}

func (d *distributor) pid() int { return d.cmd.Process.Pid }

// log is the distributor's log so far, its last 4 KiB.
func (d *distributor) log() string {
	data, _ := os.ReadFile(d.logPath)
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}

// stop ends the distributor with SIGTERM, and SIGKILL if it has not exited
// within 60 s (closing 10,000 sessions takes a while). It returns how it
// exited.
func (d *distributor) stop() error {
	if d.cmd == nil || d.done == nil {
		return nil
	}
	if err := terminate(d.cmd.Process, d.done, "distributor"); err != nil {
		return err
	}
	return d.waitErr
}

// terminate ends p with SIGTERM, and SIGKILL if done is not closed within
// 60 s, which it then says.
func terminate(p *os.Process, done <-chan struct{}, what string) error {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(60 * time.Second):
		_ = p.Kill()
		<-done
		return fmt.Errorf("%s did not exit within 60 s of SIGTERM; killed", what)
	}
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(network string) (string, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
