package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGettingStarted does what docs/getting-started.md tells a new user to
// do on one machine, running the guide's own shell blocks with bash and the
// ted binary on PATH: certificates, configs from `ted config example` with
// only the guide's edits, `ted config check`, a top tier, a lower tier and
// two subscribers, a build and a publish. Then both subscribers must hold
// the folder, extracted, and the guide's look-around commands must work;
// then the change it publishes must reach them too.
func TestGettingStarted(t *testing.T) {
	guide, err := os.ReadFile("../docs/getting-started.md")
	if err != nil {
		t.Fatal(err)
	}
	run, look, change := guideParts(t, string(guide))
	for _, port := range []string{"7400", "7410"} {
		// The guide's addresses are fixed, below the kernel's ephemeral
		// range, so no other test takes them by chance.
		c, err := net.ListenPacket("udp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("the guide's port %s is taken on this machine: %v", port, err)
		}
		c.Close()
	}

	dir := t.TempDir()
	lab := filepath.Join(dir, "ted-lab")
	bash := func(script string) (string, error) {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tedBinary)+string(os.PathListSeparator)+os.Getenv("PATH"))
		// The daemons the guide starts with & stay in this process
		// group, which the test ends.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// Output goes to a file, not a pipe: the daemons started with &
		// inherit it, and a pipe would not close until they stop.
		outFile, err := os.CreateTemp(dir, "bash-*.out")
		if err != nil {
			t.Fatal(err)
		}
		defer outFile.Close()
		cmd.Stdout, cmd.Stderr = outFile, outFile
		err = cmd.Start()
		if err == nil {
			pgid := cmd.Process.Pid
			t.Cleanup(func() { stopGroup(t, pgid) })
			err = cmd.Wait()
		}
		out, _ := os.ReadFile(outFile.Name())
		return string(out), err
	}
	out, err := bash(run)
	if err != nil {
		t.Fatalf("the guide's commands failed: %v\n%s\n%s", err, out, daemonLogs(lab))
	}
	if !strings.Contains(out, "dist-2.yaml: a valid distributor config file") || !strings.Contains(out, "web-02.yaml: a valid subscriber config file") {
		t.Errorf("ted config check did not find the edited configs valid:\n%s", out)
	}

	waitExtracted := func(rev uint64, content string) {
		t.Helper()
		for _, sub := range []string{"web-01", "web-02"} {
			waitFor(t, fmt.Sprintf("%s to extract app@%d", sub, rev), func() (bool, string) {
				if died := daemonDied(lab); died != "" {
					t.Fatalf("a daemon the guide started has stopped: %s\n%s", died, daemonLogs(lab))
				}
				state := guideState(filepath.Join(lab, sub+".yaml"), "app", rev)
				return state == "extracted", state
			})
			got, err := os.ReadFile(filepath.Join(lab, "srv", sub, "app", "index.html"))
			if err != nil || string(got) != content {
				t.Errorf("%s's app/index.html: %q, %v; want %q", sub, got, err, content)
			}
		}
	}
	waitExtracted(1, "hello from TED\n")
	out, err = bash("cd ted-lab\n" + look)
	if err != nil {
		t.Fatalf("the guide's look-around commands failed: %v\n%s", err, out)
	}
	for _, want := range []string{"extracted", "hello from TED", "web-01"} {
		if !strings.Contains(out, want) {
			t.Errorf("the guide's look-around output does not show %q:\n%s", want, out)
		}
	}
	if out, err := bash("cd ted-lab\n" + change); err != nil {
		t.Fatalf("the guide's change failed: %v\n%s", err, out)
	}
	waitExtracted(2, "hello again\n")
}

// guideParts returns the shell blocks of the guide's one-machine section:
// those to run before waiting for the subscribers, the look-around block
// after it, and the change published last.
func guideParts(t *testing.T, guide string) (run, look, change string) {
	t.Helper()
	_, rest, ok := strings.Cut(guide, "<!-- getting-started: run -->")
	section, _, ok2 := strings.Cut(rest, "<!-- getting-started: end -->")
	before, after, ok3 := strings.Cut(section, "<!-- getting-started: wait -->")
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/getting-started.md lacks its run, wait and end markers")
	}
	blocks := shellBlocks(after)
	if len(blocks) != 2 {
		t.Fatalf("after its wait marker the guide has %d shell blocks, want the look-around and the change", len(blocks))
	}
	return strings.Join(shellBlocks(before), "\n"), blocks[0], blocks[1]
}

// shellBlocks returns the ```sh blocks of markdown text.
func shellBlocks(text string) []string {
	var blocks []string
	for {
		_, rest, ok := strings.Cut(text, "```sh\n")
		if !ok {
			return blocks
		}
		block, after, _ := strings.Cut(rest, "```")
		blocks = append(blocks, block)
		text = after
	}
}

// guideState is the state of name@rev on the subscriber of config, or what
// went wrong asking.
func guideState(config, name string, rev uint64) string {
	out, err := exec.Command(tedBinary, "subscriber", "status", "--config", config, "--json").Output()
	if err != nil {
		return err.Error()
	}
	var st subscriberStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return err.Error()
	}
	if r, ok := st.distState(name, rev); ok {
		return r.State
	}
	return "not yet known"
}

// stopGroup ends a process group with SIGTERM, then SIGKILL, and waits
// until none of it is left.
func stopGroup(t *testing.T, pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemonDied is the last words of a daemon the guide started that has
// stopped ("ted: ..." on standard error), or "".
func daemonDied(lab string) string {
	files, _ := filepath.Glob(filepath.Join(lab, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for line := range strings.SplitSeq(string(data), "\n") {
			if strings.HasPrefix(line, "ted: ") {
				return filepath.Base(f) + ": " + line
			}
		}
	}
	return ""
}

// daemonLogs is every *.log the guide's daemons wrote.
func daemonLogs(lab string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(lab, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "==== %s\n%s\n", filepath.Base(f), data)
	}
	return b.String()
}
