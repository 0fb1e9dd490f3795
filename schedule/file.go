package schedule

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"ted/yamlfile"
)

// Names of the built-in schedules, which exist whether or not a file defines them.
const (
	Always = "always" // open at every instant
	Never  = "never"  // never open
)

// ErrInvalid is wrapped (via *Error) by every error about a schedule file's content.
var ErrInvalid = errors.New("invalid schedule file")

// ErrUnknownSchedule is wrapped by Lookup's error for a name the file does not define.
var ErrUnknownSchedule = errors.New("unknown schedule")

// Error is one problem in a schedule file. It matches ErrInvalid with errors.Is.
type Error struct {
	File     string // the file name given to Load or Parse
	Line     int    // 1-based line in the file; 0 when unknown
	Schedule string // the schedule's name; empty for a file-level problem
	Field    string // the field, like "windows[0].duration"; empty when not one field
	Msg      string // what is wrong
}

// Error renders "file:line: field: message", the field's path from the
// top of the file (schedules.nights.windows[0].cron), as every TED file's
// problems read.
func (e *Error) Error() string { return e.Problem().Error() }

// Problem is e in the form every TED file's problems take.
func (e *Error) Problem() *yamlfile.Problem {
	field := e.Field
	if e.Schedule != "" {
		field = strings.TrimSuffix("schedules."+e.Schedule+"."+e.Field, ".")
	}
	return &yamlfile.Problem{File: e.File, Line: e.Line, Field: field, Msg: e.Msg}
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// File is a parsed and validated schedule file.
type File struct {
	// Name is the file name errors and messages use.
	Name string
	// Schedules holds the schedules the file defines, by name. Lookup also
	// knows the built-ins.
	Schedules map[string]*Schedule
}

// Lookup returns the named schedule. The built-ins "always" and "never" exist
// even if the file does not define them; any other unknown name is an error
// naming it (wrapping ErrUnknownSchedule). A nil *File knows only the built-ins,
// which is what a config without a schedule file gets.
func (f *File) Lookup(name string) (*Schedule, error) {
	if f != nil {
		if s, ok := f.Schedules[name]; ok {
			return s, nil
		}
	}
	switch name {
	case Always:
		return &Schedule{Name: Always, Always: true, Location: time.UTC}, nil
	case Never:
		return &Schedule{Name: Never, Never: true, Location: time.UTC}, nil
	}
	file := "no schedule file"
	if f != nil {
		file = f.Name
	}
	return nil, fmt.Errorf("%s: schedule %q: %w", file, name, ErrUnknownSchedule)
}

// Names returns the names the file defines, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Schedules))
	for n := range f.Schedules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Load reads and validates the schedule file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read schedule file: %w", err)
	}
	return Parse(path, data)
}

type rawFile struct {
	Schedules map[string]*rawSchedule `yaml:"schedules"`
}

type rawSchedule struct {
	Windows   []rawRule `yaml:"windows"`
	Blackouts []rawRule `yaml:"blackouts"`
	Timezone  string    `yaml:"timezone"`
	Jitter    string    `yaml:"jitter"`
	MaxRate   string    `yaml:"max_rate"`
	Always    bool      `yaml:"always"`
	Never     bool      `yaml:"never"`
}

type rawRule struct {
	Cron     string `yaml:"cron"`
	Duration string `yaml:"duration"`
}

// Parse validates a schedule file's content; name is the file name its errors
// use. All problems found are returned together (errors.Join of *Error).
func Parse(name string, data []byte) (*File, error) {
	var raw rawFile
	doc := yamlfile.Decode(name, data, &raw)
	if err := doc.Err(); err != nil {
		// The file's shape is wrong (bad YAML, unknown fields, wrong
		// types): each problem as an *Error, so it matches ErrInvalid.
		var errs []error
		for _, p := range err.(yamlfile.Problems) {
			if p.Msg == "empty file" {
				return &File{Name: name, Schedules: map[string]*Schedule{}}, nil
			}
			errs = append(errs, &Error{File: p.File, Line: p.Line, Field: p.Field, Msg: p.Msg})
		}
		return nil, errors.Join(errs...)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{File: name, Msg: err.Error()}
	}
	p := &fileParser{file: name, root: &root}
	f := &File{Name: name, Schedules: make(map[string]*Schedule, len(raw.Schedules))}
	for _, sname := range sortedKeys(raw.Schedules) {
		if s := p.schedule(sname, raw.Schedules[sname]); s != nil {
			f.Schedules[sname] = s
		}
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].(*Error).Line < p.errs[j].(*Error).Line })
		return nil, errors.Join(p.errs...)
	}
	return f, nil
}

func sortedKeys(m map[string]*rawSchedule) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type fileParser struct {
	file string
	root *yaml.Node
	errs []error
}

// line finds the line of the node at path (mapping keys, or "[i]" for sequence
// items) under schedules.<name>; it returns the deepest line it reaches.
func (p *fileParser) line(path ...string) int {
	n := p.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, key := range append([]string{"schedules"}, path...) {
		var next *yaml.Node
		switch {
		case n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		case n.Kind == yaml.SequenceNode && strings.HasPrefix(key, "["):
			i, err := strconv.Atoi(strings.Trim(key, "[]"))
			if err == nil && i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func (p *fileParser) fail(sched, field string, path []string, format string, args ...any) {
	p.errs = append(p.errs, &Error{
		File: p.file, Line: p.line(append([]string{sched}, path...)...),
		Schedule: sched, Field: field, Msg: fmt.Sprintf(format, args...),
	})
}

func (p *fileParser) schedule(name string, raw *rawSchedule) *Schedule {
	before := len(p.errs)
	if raw == nil {
		raw = &rawSchedule{}
	}
	s := &Schedule{Name: name, Always: raw.Always, Never: raw.Never, Location: time.UTC}
	if name == "" {
		p.fail(name, "", nil, "a schedule needs a name")
	}
	if raw.Timezone != "" {
		loc, err := time.LoadLocation(raw.Timezone)
		if err != nil {
			p.fail(name, "timezone", []string{"timezone"}, "unknown timezone %q", raw.Timezone)
		} else {
			s.Location = loc
		}
	}
	if raw.Jitter != "" {
		d, err := time.ParseDuration(raw.Jitter)
		switch {
		case err != nil:
			p.fail(name, "jitter", []string{"jitter"}, "%q is not a duration like 20m", raw.Jitter)
		case d < 0:
			p.fail(name, "jitter", []string{"jitter"}, "%s is negative", raw.Jitter)
		default:
			s.Jitter = d
		}
	}
	if raw.MaxRate != "" {
		r, err := ParseRate(raw.MaxRate)
		if err != nil {
			p.fail(name, "max_rate", []string{"max_rate"}, "%v", err)
		} else {
			s.MaxRate = r
		}
	}
	switch {
	case raw.Always && raw.Never:
		p.fail(name, "always", []string{"always"}, "always and never are both set")
	case (raw.Always || raw.Never) && (len(raw.Windows) > 0 || len(raw.Blackouts) > 0):
		field := "always"
		if raw.Never {
			field = "never"
		}
		p.fail(name, field, []string{field}, "%s cannot be combined with windows or blackouts", field)
	case !raw.Always && !raw.Never && len(raw.Windows) == 0:
		p.fail(name, "windows", nil, "no windows (say never: true for a schedule that never opens)")
	}
	if name == Always && !raw.Always || name == Never && !raw.Never {
		p.fail(name, name, nil, "the built-in %q can only be redefined as { %s: true }", name, name)
	}
	for i, r := range raw.Windows {
		if rule, ok := p.rule(name, "windows", i, r, s.Location); ok {
			s.windows = append(s.windows, rule)
		}
	}
	for i, r := range raw.Blackouts {
		if rule, ok := p.rule(name, "blackouts", i, r, s.Location); ok {
			s.blackouts = append(s.blackouts, rule)
		}
	}
	if len(p.errs) > before {
		return nil
	}
	return s
}

// cronParser accepts 5 fields, 6 with a leading seconds field, and descriptors.
func cronParser() cron.Parser {
	return cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// refTime is where the gap between a cron's openings is measured from: fixed,
// so a file is accepted or refused the same way on every day.
func refTime() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }

func (p *fileParser) rule(sched, list string, i int, raw rawRule, loc *time.Location) (rule, bool) {
	idx := "[" + strconv.Itoa(i) + "]"
	field := list + idx
	ok := true
	spec, err := parseCron(raw.Cron, loc)
	if err != nil {
		p.fail(sched, field+".cron", []string{list, idx, "cron"}, "%v", err)
		ok = false
	}
	var d time.Duration
	switch {
	case raw.Duration == "":
		p.fail(sched, field+".duration", []string{list, idx}, "missing")
		ok = false
	default:
		d, err = time.ParseDuration(raw.Duration)
		switch {
		case err != nil:
			p.fail(sched, field+".duration", []string{list, idx, "duration"}, "%q is not a duration like 8h", raw.Duration)
			ok = false
		case d <= 0:
			p.fail(sched, field+".duration", []string{list, idx, "duration"}, "%s must be positive", raw.Duration)
			ok = false
		}
	}
	if !ok {
		return rule{}, false
	}
	if gap := minGap(spec); d > gap {
		p.fail(sched, field+".duration", []string{list, idx, "duration"},
			"%s is longer than the %s between openings of %q (use always: true, or a shorter duration)", raw.Duration, gap, raw.Cron)
		return rule{}, false
	}
	return rule{spec: spec, duration: d}, true
}

// parseCron parses a cron line, with an optional CRON_TZ= or TZ= prefix that
// overrides the schedule's location.
func parseCron(line string, loc *time.Location) (*cron.SpecSchedule, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, errors.New("missing")
	}
	if strings.HasPrefix(line, "CRON_TZ=") || strings.HasPrefix(line, "TZ=") {
		// Parsed here: robfig/cron panics on a prefix with nothing after it.
		zone, rest, found := strings.Cut(line[strings.Index(line, "=")+1:], " ")
		if !found || strings.TrimSpace(rest) == "" {
			return nil, fmt.Errorf("%q: a timezone prefix needs a cron expression after it", line)
		}
		l, err := time.LoadLocation(zone)
		if err != nil {
			return nil, fmt.Errorf("%q: unknown timezone %q", line, zone)
		}
		loc, line = l, strings.TrimSpace(rest)
	}
	if strings.HasPrefix(line, "@every") {
		return nil, fmt.Errorf("%q: @every is not tied to the clock; use a cron expression", line)
	}
	parsed, err := cronParser().Parse(line)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", line, err)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%q: not a calendar schedule", line)
	}
	spec.Location = loc
	if spec.Next(refTime()).IsZero() {
		return nil, fmt.Errorf("%q: never opens", line)
	}
	return spec, nil
}

// minGap is the shortest interval between consecutive openings of spec over
// two years (or its first 2000 openings) from refTime, measured in UTC so DST
// shifts do not count.
func minGap(spec *cron.SpecSchedule) time.Duration {
	utc := *spec
	utc.Location = time.UTC
	gap := time.Duration(1<<63 - 1)
	end := refTime().AddDate(2, 0, 1)
	prev := utc.Next(refTime())
	for i := 0; i < 2000 && !prev.IsZero() && prev.Before(end); i++ {
		next := utc.Next(prev)
		if next.IsZero() {
			break
		}
		gap = min(gap, next.Sub(prev))
		prev = next
	}
	return gap
}
