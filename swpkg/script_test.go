package swpkg

import "testing"

// TestScriptOf: the script a command runs is found where it is certain,
// and nothing is guessed where it is not.
func TestScriptOf(t *testing.T) {
	for _, tt := range []struct {
		command, script string
		direct          bool
	}{
		{"sh health.sh", "health.sh", false},
		{"bash -euo pipefail migrate.sh --dry-run", "migrate.sh", false},
		{"/bin/sh -x tools/check.sh", "tools/check.sh", false},
		{"./start.sh", "./start.sh", true},
		{"bin/webstack --selftest", "bin/webstack", true},
		{"FOO=1 exec ./run.sh", "./run.sh", true},
		{"systemctl stop webstack || true", "", false},
		{"systemctl start webstack && sh health.sh >/dev/null 2>&1", "health.sh", false},
		{"test -x ./hook.sh && ./hook.sh", "", false}, // guarded
		{"[ -x ./hook.sh ] && ./hook.sh", "", false},
		{"./hook.sh || true", "", false},
		{"systemctl reload nginx && ./hook.sh", "./hook.sh", true},
		{"true;./after.sh", "./after.sh", true},
		{"python3 migrate.py", "migrate.py", false},
		{". ./env.sh", "./env.sh", false},
		{"sh 2> err.log check.sh", "check.sh", false},
		{"sh health.sh>/dev/null", "", false}, // not certain where the word ends
		// Not read: inline code, interpreter options, quotes, variables,
		// absolute paths, a word that is no file, another folder.
		{`sh -c "./x.sh"`, "", false},
		{"python3 -m http.server", "", false},
		{"python3 -W ignore::x.y run.py", "", false},
		{"perl -e 'print 1'", "", false},
		{`sh "$TED_TARGET/hook.sh"`, "", false},
		{"sh /usr/local/bin/hook.sh", "", false},
		{"/usr/bin/systemctl restart webstack", "", false},
		{"bash --rcfile x.rc y.sh", "", false},
		{"sh health", "", false},
		{"cd /opt/webstack && ./bin/migrate", "", false},
		{"sh ~/hook.sh", "", false},
		{"sh *.sh", "", false},
	} {
		script, direct := scriptOf(tt.command)
		if script != tt.script || direct != tt.direct {
			t.Errorf("scriptOf(%q) = %q, %v; want %q, %v", tt.command, script, direct, tt.script, tt.direct)
		}
	}
}
