package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"ted/distribution"
	"ted/transport"
)

// agentMainPackage is the main package of a ted binary, as its build
// information records it: --agent takes nothing else.
const agentMainPackage = "ted/cmd/ted"

// agentBinary is what --agent reads from a ted binary.
type agentBinary struct {
	Platform string // GOOS/GOARCH
	Version  string
	Protocol string
}

// readAgent reads a ted binary's platform from its build information (in
// its executable header) and, when it runs here, its version and protocol
// from `PATH version --json`. version, if set, must agree; it is needed
// for a binary of another platform.
func readAgent(ctx context.Context, path, version string) (agentBinary, error) {
	var a agentBinary
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return a, usageError{fmt.Errorf("--agent %s: not a Go executable: %v", path, err)}
	}
	if bi.Path != agentMainPackage {
		return a, usageError{fmt.Errorf("--agent %s: built from %s, not %s: not a ted binary", path, bi.Path, agentMainPackage)}
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	a.Platform = goos + "/" + goarch
	if err := distribution.ValidPlatform(a.Platform); err != nil {
		return a, fmt.Errorf("--agent %s: %w", path, err)
	}
	if a.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		if version == "" {
			return a, usageError{fmt.Errorf("--agent %s is built for %s and does not run here (%s/%s): say its version with --version", path, a.Platform, runtime.GOOS, runtime.GOARCH)}
		}
		a.Version = version
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "version", "--json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return a, fmt.Errorf("--agent %s: %s version --json: %v: %s", path, path, err, bytes.TrimSpace(errOut.Bytes()))
	}
	var v versionInfo
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		return a, fmt.Errorf("--agent %s: %s version --json: %v", path, path, err)
	}
	if version != "" && version != v.Version {
		return a, usageError{fmt.Errorf("--version %s, but %s says it is version %s", version, path, v.Version)}
	}
	a.Version, a.Protocol = v.Version, v.Protocol
	return a, nil
}

// runAgentBuild builds a revision of kind agent from a ted binary: named
// after its platform (distribution.AgentName), its version the binary's,
// its one file the binary, executable.
func runAgentBuild(ctx context.Context, opts distBuildOptions, stderr io.Writer) (*distBuildResult, error) {
	for flag, set := range map[string]bool{"from": opts.From != "", "package": opts.Package != "", "requires": len(opts.Requires) > 0,
		"pre": len(opts.Pre) > 0, "post": len(opts.Post) > 0, "target": opts.Target != ""} {
		if set {
			return nil, usageError{fmt.Errorf("--%s with --agent: an agent is the one binary", flag)}
		}
	}
	a, err := readAgent(ctx, opts.Agent, opts.Version)
	if err != nil {
		return nil, err
	}
	if _, _, ok := parseAgentSemver(a.Version); !ok {
		return nil, usageError{fmt.Errorf("--agent %s reports version %q: build it with a version (go build -ldflags \"-X main.version=1.4.0\") so that nodes can tell which is newer", opts.Agent, a.Version)}
	}
	name := distribution.AgentName(a.Platform)
	if opts.Name != "" && opts.Name != name {
		return nil, usageError{fmt.Errorf("--name %s with --agent: an agent for %s is named %s", opts.Name, a.Platform, name)}
	}
	tmp, err := os.MkdirTemp("", "ted-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := copyExecutable(opts.Agent, filepath.Join(tmp, distribution.AgentFile)); err != nil {
		return nil, err
	}
	opts.Agent = ""
	opts.Name, opts.Version, opts.From, opts.kind, opts.platform = name, a.Version, tmp, distribution.KindAgent, a.Platform
	res, err := runDistBuild(ctx, opts, stderr)
	if res != nil {
		res.Platform, res.Protocol = a.Platform, a.Protocol
	}
	return res, err
}

// parseAgentSemver reads MAJOR.MINOR from an agent's version.
func parseAgentSemver(v string) (major, minor int, ok bool) {
	if _, err := distribution.ParseVersion(v); err != nil {
		return 0, 0, false
	}
	return transport.ParseAgentVersion(v)
}

// copyExecutable copies the file at src to dst, mode 0755.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("--agent: copy %s: %w", src, err)
	}
	return out.Close()
}
