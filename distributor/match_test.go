package distributor

import (
	"strings"
	"testing"

	"ted/transport"
)

func TestMatcher(t *testing.T) {
	m := newMatcher([]string{"sub-1", "group:web", "app-*", "db-?"})
	for _, tc := range []struct {
		id   transport.Identity
		want bool
	}{
		{transport.Identity{Name: "sub-1"}, true},
		{transport.Identity{Name: "sub-2"}, false},
		{transport.Identity{Name: "x", Groups: []string{"db", "web"}}, true},
		{transport.Identity{Name: "x", Groups: []string{"webs"}}, false},
		{transport.Identity{Name: "app-7"}, true},
		{transport.Identity{Name: "app-"}, true},
		{transport.Identity{Name: "myapp-7"}, false},
		{transport.Identity{Name: "db-1"}, true},
		{transport.Identity{Name: "db-12"}, false},
		// A group name is not a certificate name, nor the reverse.
		{transport.Identity{Name: "web"}, false},
		{transport.Identity{Name: "x", Groups: []string{"sub-1"}}, false},
	} {
		if got := m.matches(tc.id); got != tc.want {
			t.Errorf("matches(%s, groups %v) = %v, want %v", tc.id.Name, tc.id.Groups, got, tc.want)
		}
	}
	if !m.named("sub-1") || m.named("app-7") {
		t.Error("named must take plain entries only")
	}
	if got, want := m.String(), "[sub-1, group:web, app-*, db-?]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	var many []string
	for i := range 20 {
		many = append(many, "n"+strings.Repeat("x", i+1))
	}
	if got := newMatcher(many).String(); !strings.HasSuffix(got, ", and 12 more]") {
		t.Errorf("a long list is shown as %q, want its first 8 and a count", got)
	}
}

func TestValidateMember(t *testing.T) {
	for _, ok := range []string{"sub-1", "group:web", "web-*", "db-??", "*.prod", "group:a.b_c-1", "group:ca"} {
		if err := ValidateMember(ok); err != nil {
			t.Errorf("ValidateMember(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ entry, want string }{
		{"group:", `invalid group "": must be 1 to`},
		{"group:web/1", `invalid group "web/1": use ASCII letters`},
		{"*", "matches every certificate"},
		{"**?", "matches every certificate"},
		{"web-[0-9]", "use ASCII letters"},
		{"web/*", "use ASCII letters"},
		{"sub 1", "invalid node name"},
		{strings.Repeat("a", 64) + "*", "longer than a name"},
	} {
		err := ValidateMember(tc.entry)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateMember(%q) = %v, want an error saying %q", tc.entry, err, tc.want)
		}
	}
}

func TestValidateMembers(t *testing.T) {
	err := ValidateMembers("channels.web.children", []string{"sub-1", "dist-*", "sub-1", "group:", "dist-1"}, "dist-1")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`channels.web.children[1]: pattern "dist-*" matches this node's own name dist-1`,
		"channels.web.children[2]: sub-1 is listed twice",
		`channels.web.children[3]: "group:": invalid group ""`,
		"channels.web.children[4]: lists this node itself",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q\ndoes not say %q", err, want)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("%d problems, want 4 (one a line):\n%v", n, err)
	}
	// Publishers are not checked against the node's own name.
	if err := ValidateMembers("channels.web.publishers", []string{"dist-*"}, ""); err != nil {
		t.Error(err)
	}
}
