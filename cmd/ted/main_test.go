package main

import (
	"bytes"
	"strings"
	"testing"
)

// execute runs ted with args through a fresh root command, as main does,
// and returns its stdout.
func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	root.SetArgs(args)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// TestVersionFlag: ted --version prints what ted version prints.
func TestVersionFlag(t *testing.T) {
	want, err := execute(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(want, "ted ") {
		t.Fatalf("ted version printed %q", want)
	}
	got, err := execute(t, "--version")
	if err != nil || got != want {
		t.Errorf("ted --version = %q, %v; want %q as ted version prints it", got, err, want)
	}
}

// TestUnknownSubcommandSuggests: a mistyped command is refused at every
// level with the commands it is close to (exit 2), and without a guess
// when none is close.
func TestUnknownSubcommandSuggests(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"dist", "biuld"}, `unknown command "biuld" for "ted dist"; did you mean "build"?`},
		{[]string{"subscriber", "stauts"}, `unknown command "stauts" for "ted subscriber"; did you mean "status"?`},
		{[]string{"verison"}, `unknown command "verison" for "ted"; did you mean "version"?`},
		{[]string{"pki", "signing"}, `unknown command "signing" for "ted pki"; did you mean "signing-key"?`},
		{[]string{"dist", "frobnicate"}, `unknown command "frobnicate" for "ted dist"`},
	} {
		_, err := execute(t, tt.args...)
		if err == nil || err.Error() != tt.want || exitCode(err) != exitUsage {
			t.Errorf("ted %s: %v (exit %d); want %q, exit %d", strings.Join(tt.args, " "), err, exitCode(err), tt.want, exitUsage)
		}
	}
}
