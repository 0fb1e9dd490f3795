//go:build linux

package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFirstRunMessages runs the real binary the way a new user's first
// mistakes do, and checks each is answered in words that say what to do,
// with the usage exit status.
func TestFirstRunMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "publisher.key")
	mustTed(t, "pki", "signing-key", "--out", key)
	src := filepath.Join(dir, "site")
	writeFile(t, filepath.Join(src, "index.html"), []byte("hello\n"), 0o644)
	store := filepath.Join(dir, "store")
	build := func(edit ...string) []string {
		args := map[string]string{"--name": "app", "--version": "1.0.0", "--sign-key": key}
		for i := 0; i+1 < len(edit); i += 2 {
			args[edit[i]] = edit[i+1]
		}
		return []string{"dist", "build", "--store", store, "--from", src, "--channel", "web",
			"--name", args["--name"], "--version", args["--version"], "--sign-key", args["--sign-key"]}
	}

	version := mustTed(t, "version")
	if r := ted(t, "--version"); r.code != 0 || r.stdout != version.stdout {
		t.Errorf("%s\nwant what ted version prints: %q", r, version.stdout)
	}
	for _, tt := range []struct {
		args []string
		want string // the whole of stderr
	}{
		{[]string{"dist", "biuld"}, `ted: unknown command "biuld" for "ted dist"; did you mean "build"?`},
		{[]string{"subscriber", "stauts"}, `ted: unknown command "stauts" for "ted subscriber"; did you mean "status"?`},
		{build("--name", "café"), `ted: --name: distribution name "café": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`},
		{build("--version", "v1"), `ted: --version: "v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{build("--version", "1.0"), `ted: --version: "1.0" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`},
		{build("--sign-key", key+".pub"), "ted: --sign-key " + key + ".pub is a public key; --sign-key wants the private signing key made by `ted pki signing-key`; did you mean " + key + "?"},
	} {
		r := ted(t, tt.args...)
		if r.code != 2 || strings.TrimSpace(r.stderr) != tt.want {
			t.Errorf("%s\nwant exit 2 and\n%s", r, tt.want)
		}
	}
	if r := ted(t, "dist", "list", "--store", store); strings.Contains(r.stdout, "app") {
		t.Errorf("a refused build was stored: %s", r)
	}
}

// tedExits runs a daemon that must fail at start-up, and returns what it
// did; a daemon still running after a minute fails the test.
func tedExits(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := runTed(t, exec.CommandContext(ctx, tedBinary, args...), args)
	if ctx.Err() != nil {
		t.Fatalf("%s\nstill running after a minute; want it to refuse to start", r)
	}
	return r
}

// lastLine is the last line of s.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// TestBindFailuresNameConfig: a daemon whose address is taken says which
// config file and field name it, and the system's reason, for the
// distributor's listen, a status_listen and a cluster's bind.
func TestBindFailuresNameConfig(t *testing.T) {
	t.Parallel()
	nw := newNetwork(t)
	nw.issue("dist-1", "distributor")
	nw.issue("web-01", "subscriber")
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	takenUDP, takenTCP := udp.LocalAddr().String(), tcp.Addr().String()

	distributor := func(listen, status string) string {
		return "name: dist-1\nlisten: " + listen + "\nstatus_listen: " + status + "\ndata_dir: ./var/dist-1\n" +
			"tls: {ca: pki/ca.crt, cert: pki/dist-1.crt, key: pki/dist-1.key}\ntrust: [pki/publisher.key.pub]\n" +
			"channels:\n  web:\n    publishers: [pub-1]\n"
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	writeFile(t, filepath.Join(nw.dir, "cluster.key"), []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600)
	clusterNode := "name: web-01\nparents: [" + takenUDP + "]\ndata_dir: ./var/web-01a\n" +
		"tls: {ca: pki/ca.crt, cert: pki/web-01.crt, key: pki/web-01.key}\nchannels: [web]\ntrust: [pki/publisher.key.pub]\n" +
		"root: ./shared/root\ncluster:\n  name: web\n  node: web-01a\n  bind: " + takenTCP + "\n" +
		"  secret_file: cluster.key\n  shared_dir: ./shared\n"

	for _, tt := range []struct {
		name, role, config, want string
	}{
		{"dist-1.yaml", "distributor", distributor(takenUDP, freePort(t, "tcp")), "listen " + takenUDP},
		{"dist-1b.yaml", "distributor", distributor(freePort(t, "udp"), takenTCP), "status_listen " + takenTCP},
		{"web-01a.yaml", "subscriber", clusterNode, "cluster.bind " + takenTCP},
	} {
		config := filepath.Join(nw.dir, tt.name)
		writeFile(t, config, []byte(tt.config), 0o644)
		r := tedExits(t, tt.role, "run", "--config", config)
		// Exit 1, not 2: a port in use may be freed, and a service
		// manager should try again.
		want := "ted: " + config + ": " + tt.want + ": address already in use"
		if r.code != 1 || lastLine(r.stderr) != want {
			t.Errorf("%s\nwant exit 1 and\n%s", r, want)
		}
	}
}
