package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"ted/pki"
	"ted/subscriber/cluster"
	"ted/transport"
)

// TestBindErrorsNameFileAndField: an address a daemon cannot bind is
// reported with the config file and the field that name it, and the
// system's reason; errors about anything else are left as they are.
func TestBindErrorsNameFileAndField(t *testing.T) {
	serve := func(file *nodeFile) error {
		n := &node{file: file, log: slog.New(slog.DiscardHandler)}
		return n.serve(t.Context(), "distributor", daemonAdmin{
			status: func() any { return nil }, health: func() error { return nil }, registry: prometheus.NewRegistry(),
		}, func(context.Context) error { return nil })
	}

	// status_listen, every daemon's, through the one place they serve it.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	err = serve(&nodeFile{path: "dist-1.yaml", DataDir: t.TempDir(), StatusListen: addr})
	if want := "dist-1.yaml: status_listen " + addr + ": address already in use"; err == nil || err.Error() != want || exitCode(err) != exitError {
		t.Errorf("status_listen taken: %v (exit %d); want %q, exit %d", err, exitCode(err), want, exitError)
	}
	// The admin socket beside it failing is not the status address's fault.
	err = serve(&nodeFile{path: "dist-1.yaml", DataDir: filepath.Join(t.TempDir(), "no", "such"), StatusListen: "127.0.0.1:0"})
	if err == nil || strings.Contains(err.Error(), "status_listen") {
		t.Errorf("admin socket in a missing folder: %v; want its own error", err)
	}

	// listen: the distributor's QUIC address.
	pkiDir := t.TempDir()
	if _, err := pki.InitCA(pkiDir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Issue(pkiDir, "dist-1", pki.RoleDistributor, nil, false); err != nil {
		t.Fatal(err)
	}
	cred, err := loadCredentials("dist-1.yaml", "dist-1", tlsFiles{CA: filepath.Join(pkiDir, "ca.crt"),
		Cert: filepath.Join(pkiDir, "dist-1.crt"), Key: filepath.Join(pkiDir, "dist-1.key")}, pki.RoleDistributor)
	if err != nil {
		t.Fatal(err)
	}
	accept := func(transport.Identity) error { return nil }
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpAddr := udp.LocalAddr().String()
	_, err = transport.Listen(udpAddr, cred, accept, transport.DefaultQUICConfig())
	err = bindError("dist-1.yaml", "listen", udpAddr, "udp", err)
	if want := "dist-1.yaml: listen " + udpAddr + ": address already in use"; err == nil || err.Error() != want {
		t.Errorf("listen taken: %v; want %q", err, want)
	}
	if exitCode(err) != exitError {
		t.Errorf("listen taken: exit %d, want %d (a port in use may be freed)", exitCode(err), exitError)
	}
	_, err = transport.Listen("127.0.0.1:99999", cred, accept, transport.DefaultQUICConfig())
	err = bindError("dist-1.yaml", "listen", "127.0.0.1:99999", "udp", err)
	if want := "dist-1.yaml: listen 127.0.0.1:99999: invalid port"; err == nil || err.Error() != want {
		t.Errorf("listen on port 99999: %v; want %q", err, want)
	}
	if exitCode(err) != exitUsage {
		t.Errorf("listen on port 99999: exit %d, want %d", exitCode(err), exitUsage)
	}

	// cluster.bind: memberlist keeps only the words of its listener's
	// error.
	_, err = cluster.StartGossip(cluster.GossipConfig{Cluster: "web-cluster", Node: "web-01a", Bind: addr, Key: make([]byte, 32)})
	err = bindError("web-01a.yaml", "cluster.bind", addr, "", err)
	if want := "web-01a.yaml: cluster.bind " + addr + ": address already in use"; err == nil || err.Error() != want {
		t.Errorf("cluster.bind taken: %v; want %q", err, want)
	}

	other := fmt.Errorf("load key: %w", net.ErrClosed)
	if got := bindError("dist-1.yaml", "listen", udpAddr, "udp", other); got != other {
		t.Errorf("bindError changed an error that is not about binding: %v", got)
	}
}
