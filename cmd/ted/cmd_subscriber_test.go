package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"ted/admin"
	"ted/subscriber"
	"ted/transport"
)

// TestSubscriberExtractJSON: subscriber extract --json prints one JSON
// document, the state after the extraction as subscriber status --json
// prints it.
func TestSubscriberExtractJSON(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "web-01.yaml")
	yaml := `name: web-01
parents: [127.0.0.1:7400]
data_dir: ./var/web-01
tls: {ca: pki/ca.crt, cert: pki/web-01.crt, key: pki/web-01.key}
channels: [web]
trust: [pki/publisher.key.pub]
root: ./srv/web-01
`
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "var", "web-01")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	after := subscriber.Status{Node: "web-01", Role: "single", ActiveNode: "web-01", Distributions: []subscriber.DistributionStatus{
		{Name: "app", Revisions: []transport.RevisionState{{Name: "app", Revision: 2, Version: "1.0.1", State: "extracted"}}},
	}}
	var extracted atomic.Bool
	srv, err := startAdmin(dataDir, "", daemonAdmin{
		status: func() any { return after }, health: func() error { return nil }, registry: prometheus.NewRegistry(),
		actions: map[string]admin.Action{"extract": func(context.Context, url.Values) (any, error) {
			extracted.Store(true)
			return after, nil
		}},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() {
		cancel()
		<-served
		srv.Close()
	}()

	g := &globalOptions{}
	cmd := newSubscriberExtractCommand(g)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--config", config, "--json"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !extracted.Load() {
		t.Error("the daemon was not asked to extract")
	}
	var got subscriber.Status
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out.String())
	}
	if dec.More() {
		t.Errorf("more than one JSON document: %s", out.String())
	}
	// The fields subscriber status --json is documented to print.
	for _, field := range []string{"node", "role", "active_node", "distributions"} {
		if _, ok := doc[field]; !ok {
			t.Errorf("extract --json has no %q: %s", field, out.String())
		}
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Node != "web-01" || got.Role != "single" || len(got.Distributions) != 1 ||
		got.Distributions[0].Revisions[0].State != "extracted" {
		t.Errorf("extract --json = %+v, want the status after extracting", got)
	}
}
