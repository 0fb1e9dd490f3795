package swpkg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// A component's pre, post and undo commands run with sh -c in the
// package's scripts folder (or, in a package without one, its post
// commands in the component's target, which holds its files). A command that runs a
// script of the package by a relative path, such as "sh health.sh" or
// "./start.sh", is checked when the spec is read: the script must be in
// that folder, or the package compiles and fails on every server.

// scriptOf returns the relative script a command runs, if it names one it
// can be sure of: the first word when it is a relative path (./start.sh,
// bin/check), or the first argument of a shell or interpreter when it
// looks like a file (sh health.sh, python3 tools/migrate.py). direct
// reports the first case, where the file itself must be executable.
//
// Commands it cannot read for certain (quotes, variables, globs, inline
// code, an interpreter's options, a cd first, a test or a || that may
// guard the script) give "": such a command is left to run as written,
// never refused on a guess.
func scriptOf(command string) (script string, direct bool) {
	if strings.Contains(command, "||") {
		return "", false // a fallback may cover a missing script: ./hook || true
	}
	for _, words := range simpleCommands(command) {
		switch words[0] {
		case "cd", "pushd":
			return "", false // relative paths mean another folder from here on
		case "test", "[", "[[", "if":
			return "", false // a test may guard the script: test -x ./hook && ./hook
		}
		if script, direct := scriptOfWords(words); script != "" {
			return script, direct
		}
	}
	return "", false
}

// shells take options of one letter after - or +: c means inline code,
// and o or O takes the next word (-o pipefail, -euo pipefail).
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true, "ksh": true, "zsh": true}

// interpreters run the file named by their first argument. Their options
// are many and some take a word, so a command that gives any is not read.
var interpreters = map[string]bool{"python": true, "python2": true, "python3": true, "perl": true,
	"ruby": true, "node": true, "php": true, ".": true, "source": true}

// wrappers run the words after them as the command.
var wrappers = map[string]bool{"exec": true, "nohup": true, "env": true, "time": true, "!": true,
	"if": true, "then": true, "else": true, "elif": true, "while": true, "until": true, "do": true}

func scriptOfWords(words []string) (string, bool) {
	for len(words) > 0 && (isAssignment(words[0]) || wrappers[words[0]]) {
		words = words[1:]
	}
	if len(words) == 0 || !plain(words[0]) {
		return "", false
	}
	first := words[0]
	if strings.Contains(first, "/") {
		if !path.IsAbs(first) {
			return first, true
		}
		first = path.Base(first) // /bin/sh: look at its arguments
	}
	if !shells[first] && !interpreters[first] {
		return "", false
	}
	args := words[1:]
	for shells[first] && len(args) > 0 && len(args[0]) > 1 && (args[0][0] == '-' || args[0][0] == '+') {
		a := args[0]
		args = args[1:]
		if a == "--" {
			break
		}
		switch {
		case strings.HasPrefix(a, "--") || strings.Contains(a, "c"):
			return "", false // a long option, or inline code
		case strings.ContainsAny(a, "oO") && len(args) > 0:
			args = args[1:]
		}
	}
	if len(args) == 0 || !plain(args[0]) || strings.HasPrefix(args[0], "-") || path.IsAbs(args[0]) || !looksLikeFile(args[0]) {
		return "", false
	}
	return args[0], false
}

// simpleCommands splits a command line into the words of its simple
// commands, at ; & | and newlines, leaving out redirections.
func simpleCommands(command string) [][]string {
	var out [][]string
	var words []string
	skipNext := false
	flush := func() {
		if len(words) > 0 {
			out = append(out, words)
		}
		words = nil
	}
	for _, field := range strings.FieldsFunc(command, func(r rune) bool { return r == ' ' || r == '\t' }) {
		for _, part := range splitOperators(field) {
			switch {
			case part == ";" || part == "&" || part == "|" || part == "&&" || part == "||" || part == "\n":
				flush()
			case skipNext:
				skipNext = false
			case isRedirection(part):
				// "2>" takes the next word; ">/dev/null" and "2>&1" hold it.
				skipNext = strings.HasSuffix(part, ">") || strings.HasSuffix(part, "<")
			default:
				words = append(words, part)
			}
		}
	}
	flush()
	return out
}

// splitOperators cuts a whitespace-free field at the control operators in
// it: "a;b" is "a", ";", "b".
func splitOperators(field string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(field); i++ {
		c := field[i]
		if c != ';' && c != '&' && c != '|' && c != '\n' {
			continue
		}
		// &> and >& are redirections, not operators.
		if c == '&' && (i > 0 && field[i-1] == '>' || i+1 < len(field) && field[i+1] == '>') {
			continue
		}
		if i > start {
			parts = append(parts, field[start:i])
		}
		op := string(c)
		if i+1 < len(field) && field[i+1] == c && c != ';' && c != '\n' {
			op += string(c)
			i++
		}
		parts = append(parts, op)
		start = i + 1
	}
	if start < len(field) {
		parts = append(parts, field[start:])
	}
	return parts
}

func isRedirection(w string) bool {
	return strings.ContainsAny(strings.TrimLeft(w, "0123456789&"), "<>") &&
		strings.IndexAny(strings.TrimLeft(w, "0123456789&"), "<>") == 0
}

// isAssignment reports whether w is NAME=VALUE before a command.
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, c := range name {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// plain reports whether w means itself to the shell: no quotes, escapes,
// expansions or globs.
func plain(w string) bool {
	return w != "" && !strings.ContainsAny(w, "'\"\\$`*?[]{}()~!#=:<>|;&")
}

// looksLikeFile reports whether an interpreter's argument is a file path
// rather than a word: it has a folder or an extension.
func looksLikeFile(w string) bool {
	if strings.Contains(w, "/") {
		return true
	}
	dot := strings.LastIndexByte(w, '.')
	return dot > 0 && dot < len(w)-1
}

// checkScript checks that the script a command runs is in dir (the
// scripts folder, or the component's files without one); shown is how
// the spec names that folder. It returns "" if all is well, else what is
// wrong.
func checkScript(command, dir, shown string, scriptsFolder bool) string {
	script, direct := scriptOf(command)
	if script == "" {
		return ""
	}
	where := fmt.Sprintf("the package's scripts folder %s, where the commands run", shown)
	if !scriptsFolder {
		where = fmt.Sprintf("the component's files %s, where the commands run (the package has no scripts folder)", shown)
	}
	full := filepath.Join(dir, filepath.FromSlash(script))
	if !within(dir, full) {
		return fmt.Sprintf("%q runs %s, which is outside %s", command, script, where)
	}
	info, err := os.Stat(full)
	if err == nil && within(dir, resolved(full)) {
		switch {
		case !info.Mode().IsRegular():
			return fmt.Sprintf("%q runs %s, which is not a file in %s", command, script, where)
		case direct && info.Mode().Perm()&0o111 == 0:
			return fmt.Sprintf("%q runs %s directly, which is not executable (chmod +x %s, or run it with sh)", command, script, script)
		}
		return ""
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%q runs %s: %v", command, script, err)
	}
	msg := fmt.Sprintf("%q runs %s, which is not in %s", command, script, where)
	// "sh scripts/stop.sh" written as if from the spec's folder.
	if rest, ok := strings.CutPrefix(script, filepath.Base(dir)+"/"); ok {
		if info, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rest))); err == nil && info.Mode().IsRegular() {
			msg += fmt.Sprintf("; did you mean %q?", strings.Replace(command, script, rest, 1))
		}
	}
	return msg
}

// resolved is p with symlinks resolved, or p if that fails.
func resolved(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
