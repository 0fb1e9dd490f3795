package distribution

import "testing"

// TestParseVersion: strict semantic versions pass as written; the forms a
// lenient parser would complete are refused with the completed form
// suggested.
func TestParseVersion(t *testing.T) {
	for _, v := range []string{"1.0.0", "0.1.2", "2.1.0-rc.1", "1.0.0+build.7", "1.2.3-beta.2+exp.sha.5114f85"} {
		got, err := ParseVersion(v)
		if err != nil || got != v {
			t.Errorf("ParseVersion(%q) = %q, %v; want it as written", v, got, err)
		}
	}
	for v, want := range map[string]string{
		"v1":     `"v1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`,
		"1":      `"1" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`,
		"1.0":    `"1.0" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`,
		"v1.2.3": `"v1.2.3" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.2.3"?`,
		"01.0.0": `"01.0.0" is not a semantic version MAJOR.MINOR.PATCH; did you mean "1.0.0"?`,
		"two":    `"two" is not a semantic version MAJOR.MINOR.PATCH (such as 1.0.0 or 2.1.0-rc.1)`,
		"":       `"" is not a semantic version MAJOR.MINOR.PATCH (such as 1.0.0 or 2.1.0-rc.1)`,
	} {
		if _, err := ParseVersion(v); err == nil || err.Error() != want {
			t.Errorf("ParseVersion(%q): %v\nwant %s", v, err, want)
		}
	}
}

// TestValidNameSaysASCII: a name with a letter outside ASCII is refused
// saying which letters are meant.
func TestValidNameSaysASCII(t *testing.T) {
	err := ValidName("--name", "café")
	want := `--name "café": use ASCII letters a-z A-Z, digits and . _ + - (starting with a letter or digit)`
	if err == nil || err.Error() != want {
		t.Errorf("ValidName(café): %v\nwant %s", err, want)
	}
}
