package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ted/pki"
	"ted/transport"
)

// TestConfigCheckStatusListen: status_listen off loopback without
// status_tls is refused by ted config check and by the daemon's loader,
// with the same message naming the file, the key and what to add.
func TestConfigCheckStatusListen(t *testing.T) {
	dir := t.TempDir()
	status := regexp.MustCompile(`(?m)^#?status_listen: .*$`)
	load := map[string]func(string) error{
		"distributor": func(f string) error { _, err := loadDistributorConfig(f); return err },
		"subscriber":  func(f string) error { _, err := loadSubscriberConfig(f); return err },
		"publisher":   func(f string) error { _, err := loadPublisherConfig(f); return err },
	}
	for _, kind := range []string{"distributor", "subscriber", "publisher"} {
		t.Run(kind, func(t *testing.T) {
			example := writeExample(t, dir, kind, kind+".yaml")
			data, err := os.ReadFile(example)
			if err != nil {
				t.Fatal(err)
			}
			write := func(listen, extra string) string {
				t.Helper()
				text := string(data)
				if listen != "" {
					text = status.ReplaceAllString(text, `status_listen: "`+listen+`"`)
				}
				file := filepath.Join(dir, kind+"-edited.yaml")
				if err := os.WriteFile(file, []byte(text+extra), 0o644); err != nil {
					t.Fatal(err)
				}
				return file
			}
			check := func(file string) (string, error) {
				var out bytes.Buffer
				err := runConfigCheck(configCheckOptions{}, []string{file}, false, &out, &bytes.Buffer{})
				return out.String(), err
			}

			for _, addr := range []string{"0.0.0.0:7401", "[::]:7401", ":7401", "10.1.2.3:7401", "mgmt.example.net:7401"} {
				file := write(addr, "")
				out, err := check(file)
				want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(file) + `:\d+: status_listen: "` + regexp.QuoteMeta(addr) +
					`" is not a loopback address, and the status endpoints are not served there as plain HTTP: add status_tls: true .*ted pki issue --role operator`)
				if exitCode(err) != exitUsage || !want.MatchString(out) {
					t.Errorf("%s: config check: exit %d\n%s\nwant a line matching %s", addr, exitCode(err), out, want)
				}
				// The daemon refuses to start with the same line.
				err = load[kind](file)
				if exitCode(err) != exitUsage || err == nil || !want.MatchString(err.Error()) {
					t.Errorf("%s: the daemon's loader: %v (exit %d), want the same problem, exit 2", addr, err, exitCode(err))
				}
			}
			for _, addr := range []string{"127.0.0.1:7401", "127.0.0.2:0", "[::1]:7401", "localhost:7401"} {
				if out, err := check(write(addr, "")); err != nil {
					t.Errorf("%s is loopback: %v\n%s", addr, err, out)
				}
			}
			// With status_tls, and /metrics open, any address.
			if out, err := check(write("0.0.0.0:7401", "\nstatus_tls: true\nstatus_metrics_open: true\n")); err != nil {
				t.Errorf("0.0.0.0 with status_tls: %v\n%s", err, out)
			}
			if err := load[kind](write("0.0.0.0:7401", "\nstatus_tls: true\n")); err != nil {
				t.Errorf("the daemon's loader, with status_tls: %v", err)
			}
			// status_metrics_open without status_tls, status_tls without a
			// listener.
			out, _ := check(write("127.0.0.1:7401", "\nstatus_metrics_open: true\n"))
			if !strings.Contains(out, "status_metrics_open: true without status_tls: true") {
				t.Errorf("status_metrics_open without status_tls:\n%s", out)
			}
			noListen := strings.NewReplacer("\nstatus_listen: 127.0.0.1:7401\n", "\n").Replace(string(data))
			file := filepath.Join(dir, kind+"-nolisten.yaml")
			if err := os.WriteFile(file, []byte(noListen+"\nstatus_tls: true\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, _ = check(file)
			if !strings.Contains(out, "status_tls: true, but there is no status_listen") {
				t.Errorf("status_tls without status_listen:\n%s", out)
			}
		})
	}
}

// TestStatusTLSOperators: a daemon's status address with status_tls serves
// an operator, refuses other roles and revoked operators, and presents a
// renewed certificate from the next handshake on.
func TestStatusTLSOperators(t *testing.T) {
	pkiDir := t.TempDir()
	if _, err := pki.InitCA(pkiDir, false); err != nil {
		t.Fatal(err)
	}
	issue := func(name string, role pki.Role) tls.Certificate {
		t.Helper()
		files, err := pki.Issue(pkiDir, name, role, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	issue("dist-1", pki.RoleDistributor)
	files := tlsFiles{CA: filepath.Join(pkiDir, "ca.crt"), Cert: filepath.Join(pkiDir, "dist-1.crt"), Key: filepath.Join(pkiDir, "dist-1.key")}
	cred, err := transport.LoadCredentials(files.CA, files.Cert, files.Key, pki.RoleDistributor)
	if err != nil {
		t.Fatal(err)
	}
	alice, web := issue("alice", pki.RoleOperator), issue("web-01", pki.RoleSubscriber)
	pool, err := pki.LoadCertPool(files.CA)
	if err != nil {
		t.Fatal(err)
	}

	// A port on every address, free a moment ago.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	file := &nodeFile{path: "dist-1.yaml", Name: "dist-1", DataDir: t.TempDir(), TLS: files,
		StatusListen: net.JoinHostPort("0.0.0.0", strconv.Itoa(port)), StatusTLS: true}
	n := &node{file: file, log: slog.New(slog.DiscardHandler), cred: cred}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		served <- n.serve(ctx, "distributor", daemonAdmin{
			status: func() any { return nil }, health: func() error { return nil }, registry: prometheus.NewRegistry(),
		}, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	get := func(client *tls.Certificate) (int, string, *x509.Certificate, error) {
		conf := &tls.Config{RootCAs: pool, ServerName: "dist-1"}
		if client != nil {
			conf.Certificates = []tls.Certificate{*client}
		}
		tr := &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.TLS.PeerCertificates[0], nil
	}
	// Up once it answers; a refused connection means not yet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, _, err := get(&alice)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status address not up: %v", err)
		}
		select {
		case err := <-served:
			t.Fatalf("serve ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}

	code, body, server, err := get(&alice)
	if err != nil || code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("operator: %d %q %v, want 200 ok", code, body, err)
	}
	if server.Subject.CommonName != "dist-1" {
		t.Errorf("server certificate %q, want the node's own", server.Subject.CommonName)
	}
	if code, body, _, err := get(&web); err != nil || code != http.StatusForbidden || !strings.Contains(body, `has role subscriber, not operator`) {
		t.Errorf("subscriber: %d %q %v, want 403", code, body, err)
	}
	if _, _, _, err := get(nil); err == nil {
		t.Error("no certificate: answered, want the handshake refused")
	}

	// Renewed: presented from the next handshake.
	oldSerial := pki.SerialHex(server)
	renewed := issue("dist-1", pki.RoleDistributor)
	if err := cred.Replace(renewed); err != nil {
		t.Fatal(err)
	}
	_, _, server, err = get(&alice)
	if err != nil || pki.SerialHex(server) == oldSerial || pki.SerialHex(server) != pki.SerialHex(renewed.Leaf) {
		t.Errorf("after renewal: serial %v (%v), want the renewed one", server, err)
	}

	// Revoked by the list in force: refused.
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ca.Revoke([]string{pki.SerialHex(alice.Leaf)})
	if err != nil {
		t.Fatal(err)
	}
	cred.SetRevocations(list)
	if code, body, _, err := get(&alice); err != nil || code != http.StatusForbidden || !strings.Contains(body, "revoked") {
		t.Errorf("revoked operator: %d %q %v, want 403", code, body, err)
	}
}

// TestOperatorCannotBeANode: an operator certificate is no node's: a
// daemon refuses it as its own, a join token cannot be made for it.
func TestOperatorCannotBeANode(t *testing.T) {
	pkiDir := t.TempDir()
	if _, err := pki.InitCA(pkiDir, false); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	g := &globalOptions{}
	if err := runPKIIssue(t.Context(), g, pkiIssueOptions{dir: pkiDir, name: "alice", role: "operator"}, &out); err != nil {
		t.Fatalf("ted pki issue --role operator: %v", err)
	}
	files := tlsFiles{CA: filepath.Join(pkiDir, "ca.crt"), Cert: filepath.Join(pkiDir, "alice.crt"), Key: filepath.Join(pkiDir, "alice.key")}
	for _, role := range []pki.Role{pki.RolePublisher, pki.RoleDistributor, pki.RoleSubscriber} {
		_, err := loadCredentials("alice.yaml", "alice", files, role)
		if !errors.Is(err, pki.ErrWrongRole) || !strings.Contains(err.Error(), "role operator, this daemon needs "+string(role)) {
			t.Errorf("a %s daemon with an operator certificate: %v", role, err)
		}
	}
	err := runPKIToken(t.Context(), g, pkiTokenOptions{dir: pkiDir, role: "operator", ttl: time.Hour}, &out, &out)
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "a join token enrolls a node") || !strings.Contains(err.Error(), "ted pki issue --role operator") {
		t.Errorf("ted pki token --role operator: %v (exit %d), want a usage error saying why", err, exitCode(err))
	}
}
