package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"ted/admin"
	"ted/distribution"
	"ted/distributor"
	"ted/fleet"
	"ted/pki"
	"ted/schedule"
	"ted/transport"
	"ted/yamlfile"
)

// Config files (docs/reference). Relative paths in a config file are
// resolved against the file's own directory, so a directory of configs
// (such as the one `ted demo --keep` leaves) works from anywhere.

// tlsFiles names a node's CA, certificate and key.
type tlsFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CRL is the CA's revocation list (ted pki revoke); optional. A
	// distributor loads it and passes it down the tree; a node that got a
	// newer one from its parent keeps that one in its data_dir.
	CRL string `yaml:"crl"`
	// RenewBefore is how long before its certificate expires a node asks
	// its parent for a new one; 0 means the default, a negative value is
	// refused, and "off" cannot be said: renew_before: 1s is as good as off.
	RenewBefore time.Duration `yaml:"renew_before"`
}

// nodeFile holds the fields every daemon's config has.
type nodeFile struct {
	Name          string   `yaml:"name"`
	DataDir       string   `yaml:"data_dir"`
	TLS           tlsFiles `yaml:"tls"`
	Parents       []string `yaml:"parents"`
	Schedules     string   `yaml:"schedules"`
	Trust         []string `yaml:"trust"`
	KeepRevisions *int     `yaml:"keep_revisions"`
	MinFreeDisk   string   `yaml:"min_free_disk"`
	StatusListen  string   `yaml:"status_listen"`
	// StatusTLS serves status_listen over HTTPS with the node's own
	// certificate, to clients with an operator certificate; required on
	// any address but loopback (checkStatus).
	StatusTLS bool `yaml:"status_tls"`
	// StatusMetricsOpen serves GET /metrics over status_tls without a
	// client certificate.
	StatusMetricsOpen bool     `yaml:"status_metrics_open"`
	Link              linkFile `yaml:"link"`

	path string
	// minFree is MinFreeDisk in bytes.
	minFree int64
}

type distributorFile struct {
	nodeFile `yaml:",inline"`
	Listen   string                        `yaml:"listen"`
	Channels map[string]channelFile        `yaml:"channels"`
	Clusters map[string]clusterMembersFile `yaml:"clusters"`
	Enroll   *enrollFile                   `yaml:"enroll"`
	Fleet    fleetFile                     `yaml:"fleet"`
	Agent    *agentFile                    `yaml:"agent"`
}

// fleetFile is a distributor's fleet block: what it knows of its subtree
// (ted status, ted report, the console) and the history it keeps. Every
// field is optional (docs/fleet.md).
type fleetFile struct {
	// StaleAfter: a node out of touch this long is shown stale (default
	// 3m); ForgetAfter: dropped from the view (default 168h).
	StaleAfter  time.Duration `yaml:"stale_after"`
	ForgetAfter time.Duration `yaml:"forget_after"`
	// History bounds the event history in data_dir/history.
	History struct {
		MaxAge   time.Duration `yaml:"max_age"`
		MaxBytes string        `yaml:"max_bytes"`
		// Off keeps no history.
		Off bool `yaml:"off"`
	} `yaml:"history"`

	maxBytes int64
}

// check validates the fleet block, filling in the defaults.
func (f *fleetFile) check(d *yamlfile.Doc) {
	if f.StaleAfter < 0 {
		d.Errorf("fleet.stale_after", "%v: must be positive", f.StaleAfter)
	}
	if f.StaleAfter == 0 {
		f.StaleAfter = fleet.DefaultStaleAfter
	}
	if f.ForgetAfter == 0 {
		f.ForgetAfter = max(fleet.DefaultForgetAfter, f.StaleAfter)
	}
	if f.ForgetAfter < f.StaleAfter {
		d.Errorf("fleet.forget_after", "%v is shorter than stale_after (%v): a node would be forgotten before it shows stale", f.ForgetAfter, f.StaleAfter)
	}
	if f.History.MaxAge < 0 {
		d.Errorf("fleet.history.max_age", "%v: must be positive", f.History.MaxAge)
	}
	if f.History.MaxAge == 0 {
		f.History.MaxAge = fleet.DefaultHistoryMaxAge
	}
	f.maxBytes = fleet.DefaultHistoryMaxBytes
	if v := f.History.MaxBytes; v != "" {
		n, err := humanize.ParseBytes(v)
		if err != nil || !strings.ContainsAny(v, "BbKkMmGgTt") || n < 1<<20 {
			d.Errorf("fleet.history.max_bytes", "%q is not a size with a unit of at least 1MiB (e.g. 256MiB)", v)
		} else {
			f.maxBytes = int64(n)
		}
	}
}

// enrollFile is a distributor's enroll block: where it signs the
// certificates that new nodes ask for with a join token, and that nodes
// renew (docs/enroll.md). Without it, the distributor passes such requests
// on to its parent.
type enrollFile struct {
	// CADir holds ca.crt and ca.key (ted pki init); the distributor
	// records what it issues in CADir/issued.jsonl and the tokens used in
	// CADir/tokens-used.jsonl, which `ted pki token` on the same directory
	// shares.
	CADir string `yaml:"ca_dir"`
}

// clusterMembersFile is a cluster subscriber under a distributor's
// clusters: the certificate names its nodes may use.
type clusterMembersFile struct {
	Members []string `yaml:"members"`
}

// clusters returns the clusters section as the distributor takes it.
func (c *distributorFile) clusters() map[string]distributor.Cluster {
	out := make(map[string]distributor.Cluster, len(c.Clusters))
	for name, cl := range c.Clusters {
		out[name] = distributor.Cluster{Members: cl.Members}
	}
	return out
}

// check validates the common fields and resolves their paths, recording
// every problem in d. noSchedules, if not empty, says why this kind of
// daemon refuses a schedule file for now.
func (c *nodeFile) check(d *yamlfile.Doc, noSchedules string) {
	file := d.File
	c.path = file
	if err := pki.ValidateName(c.Name); err != nil {
		d.Errorf("name", "%v", err)
	}
	checkStatus(d, c.StatusListen, c.StatusTLS, c.StatusMetricsOpen)
	for i, p := range c.Parents {
		checkAddr(d, fmt.Sprintf("parents[%d]", i), p, true, addrDial)
	}
	if c.DataDir == "" {
		d.Errorf("data_dir", "missing")
	}
	c.DataDir = resolve(file, c.DataDir)
	c.TLS.check(d)
	c.Trust = checkTrust(d, c.Trust)
	checkKeep(d, &c.KeepRevisions)
	c.minFree = checkMinFree(d, c.MinFreeDisk)
	if c.Schedules != "" && noSchedules != "" {
		d.Errorf("schedules", "%s", noSchedules)
	}
	c.Schedules = resolve(file, c.Schedules)
	c.Link.check(d)
}

// linkFile tunes how a node's QUIC links notice a dead peer and how
// often a child looks for its preferred parent again. Every field is
// optional; the defaults are transport.DefaultQUICConfig's and 30 s.
type linkFile struct {
	HandshakeTimeout  time.Duration `yaml:"handshake_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	Keepalive         time.Duration `yaml:"keepalive"`
	PreferParentEvery time.Duration `yaml:"prefer_parent_every"`
}

// check refuses negative values and a keepalive that cannot keep the link
// alive.
func (l *linkFile) check(d *yamlfile.Doc) {
	for _, f := range []struct {
		field string
		value time.Duration
	}{{"link.handshake_timeout", l.HandshakeTimeout}, {"link.idle_timeout", l.IdleTimeout}, {"link.keepalive", l.Keepalive}, {"link.prefer_parent_every", l.PreferParentEvery}} {
		if f.value < 0 {
			d.Errorf(f.field, "%v: must be positive", f.value)
		}
	}
	idle, keep := l.IdleTimeout, l.Keepalive
	def := transport.DefaultQUICConfig()
	if idle == 0 {
		idle = def.MaxIdleTimeout
	}
	if keep == 0 {
		keep = transport.DefaultKeepAlive(idle)
	}
	if keep >= idle && keep > 0 && idle > 0 {
		d.Errorf("link.keepalive", "%v must be shorter than the idle timeout %v", keep, idle)
	}
}

// apply sets the link's values on the QUIC and parent configs.
func (l *linkFile) apply(q *transport.QUICConfig, parents *transport.ParentsConfig) {
	if l.HandshakeTimeout > 0 {
		q.HandshakeIdleTimeout = l.HandshakeTimeout
	}
	if l.IdleTimeout > 0 {
		q.MaxIdleTimeout = l.IdleTimeout
		// The default keepalive follows a shorter idle timeout, as
		// check assumed.
		q.KeepAlivePeriod = transport.DefaultKeepAlive(l.IdleTimeout)
	}
	if l.Keepalive > 0 {
		q.KeepAlivePeriod = l.Keepalive
	}
	if l.PreferParentEvery > 0 {
		parents.PreferEvery = l.PreferParentEvery
	}
}

type channelFile struct {
	Send       string     `yaml:"send"`
	Publishers []string   `yaml:"publishers"`
	Children   []string   `yaml:"children"`
	Waves      *wavesFile `yaml:"waves"`
}

// wavesFile is a channel's waves block: each new revision goes to the
// first wave (canary) of the subscribers of this distributor's subtree,
// and to the rest once the first wave has been healthy for soak
// (docs/upgrade.md#waves).
type wavesFile struct {
	Canary    string        `yaml:"canary"`
	Soak      time.Duration `yaml:"soak"`
	StopAfter int           `yaml:"stop_after"`
}

// check validates a waves block of channel field.
func (w *wavesFile) check(d *yamlfile.Doc, field string) {
	if w == nil {
		return
	}
	if err := distributor.ParseCanary(w.Canary); err != nil {
		d.Errorf(field+".canary", "%v", err)
	}
	if w.Soak < 0 {
		d.Errorf(field+".soak", "%v: must be positive", w.Soak)
	}
	if w.StopAfter < 0 {
		d.Errorf(field+".stop_after", "%d: must be positive", w.StopAfter)
	}
	if w.StopAfter == 0 {
		w.StopAfter = 1
	}
}

type subscriberFile struct {
	nodeFile `yaml:",inline"`
	Channels []string     `yaml:"channels"`
	Extract  string       `yaml:"extract"`
	Root     string       `yaml:"root"`
	Cluster  *clusterFile `yaml:"cluster"`
	Agent    *agentFile   `yaml:"agent"`
}

// channelsWithAgent are the channels the subscriber takes: its own, and
// its agent block's.
func (c *subscriberFile) channelsWithAgent() []string {
	if c.Agent == nil || slices.Contains(c.Channels, c.Agent.Channel) {
		return c.Channels
	}
	return append(slices.Clone(c.Channels), c.Agent.Channel)
}

// clusterFile is a subscriber's cluster block
// (docs/reference/subscriber.md#cluster).
type clusterFile struct {
	Name       string   `yaml:"name"`
	Node       string   `yaml:"node"`
	Bind       string   `yaml:"bind"`
	Join       []string `yaml:"join"`
	Priority   int      `yaml:"priority"`
	SecretFile string   `yaml:"secret_file"`
	SharedDir  string   `yaml:"shared_dir"`
}

// check validates the block and resolves its paths against the config
// file's directory.
func (c *clusterFile) check(d *yamlfile.Doc) {
	if err := distribution.ValidName("name", c.Name); err != nil {
		d.Errorf("cluster.name", "%v", err)
	}
	if err := distribution.ValidName("node", c.Node); err != nil {
		d.Errorf("cluster.node", "%v", err)
	}
	checkAddr(d, "cluster.bind", c.Bind, true, addrCluster)
	for i, a := range c.Join {
		checkAddr(d, fmt.Sprintf("cluster.join[%d]", i), a, true, addrCluster)
	}
	if c.SecretFile == "" {
		d.Errorf("cluster.secret_file", "missing: the gossip is always encrypted (openssl rand -base64 32 > cluster.key)")
	}
	if c.SharedDir == "" {
		d.Errorf("cluster.shared_dir", "missing: the store and journal live there, on storage every node reaches")
	}
	c.SecretFile, c.SharedDir = resolve(d.File, c.SecretFile), resolve(d.File, c.SharedDir)
}

// configError names the config file and the field, for a problem found
// outside the file's own checks (a schedule it names, a port in use).
func configError(file, field, format string, args ...any) error {
	return usageError{fmt.Errorf("%s: %s: %s", file, field, fmt.Sprintf(format, args...))}
}

// addProblems records err's lines in d, each "FIELD: message" as the
// distributor package's validation writes them.
func addProblems(d *yamlfile.Doc, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		field, msg, ok := strings.Cut(line, ": ")
		if !ok || strings.ContainsAny(field, " \"") {
			field, msg = "", line
		}
		d.Errorf(field, "%s", msg)
	}
}

// configErrors names the config file on every line of err, one problem a
// line (errors.Join), each of which names its field.
func configErrors(file string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = file + ": " + lines[i]
	}
	return usageError{errors.New(strings.Join(lines, "\n"))}
}

// readConfig reads a YAML config file and decodes it strictly into out:
// unknown or repeated fields, wrong types and bad YAML are problems of the
// Doc, each naming the file, line and field. The error is for a file that
// cannot be read.
func readConfig(file string, out any) (*yamlfile.Doc, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usageError{fmt.Errorf("config: %w", err)}
	}
	return yamlfile.Decode(file, data, out), nil
}

// problems is d's problems as a usage error (exit 2), or nil.
func problems(d *yamlfile.Doc) error {
	if err := d.Err(); err != nil {
		return usageError{err}
	}
	return nil
}

// resolve makes a config path absolute against the config file's directory.
func resolve(configFile, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(configFile), p)
}

func (t *tlsFiles) check(d *yamlfile.Doc) {
	for _, f := range []struct{ field, value string }{{"tls.ca", t.CA}, {"tls.cert", t.Cert}, {"tls.key", t.Key}} {
		if f.value == "" {
			d.Errorf(f.field, "missing")
		}
	}
	if t.RenewBefore < 0 {
		d.Errorf("tls.renew_before", "%v: must be positive", t.RenewBefore)
	}
	t.CA, t.Cert, t.Key = resolve(d.File, t.CA), resolve(d.File, t.Cert), resolve(d.File, t.Key)
	t.CRL = resolve(d.File, t.CRL)
}

// addrUse is what a config does with an address, which decides what it
// may say.
type addrUse int

const (
	addrListen  addrUse = iota // listen, status_listen: any host (all), port 0 (any free)
	addrDial                   // parents, distributor: a port to dial
	addrCluster                // cluster.bind, cluster.join: a host the other nodes reach, a port
)

// checkAddr checks a HOST:PORT field. A port may be a number or a service
// name (/etc/services).
func checkAddr(d *yamlfile.Doc, field, addr string, required bool, use addrUse) {
	if addr == "" {
		if required {
			d.Errorf(field, "missing")
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		d.Errorf(field, "%q is not HOST:PORT", addr)
		return
	}
	if host == "" && use == addrCluster {
		// memberlist would advertise an address the others cannot reach,
		// and each node would be a cluster of its own.
		d.Errorf(field, "%q: name the host (an address the other nodes reach)", addr)
		return
	}
	low := 1
	if use == addrListen {
		low = 0
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		if _, lerr := net.LookupPort("udp", port); lerr != nil {
			d.Errorf(field, "%q: the port must be a number from %d to 65535 or a service name", addr, low)
		}
		return
	}
	if n < low || n > 65535 {
		d.Errorf(field, "%q: the port must be a number from %d to 65535", addr, low)
	}
}

// checkStatus checks status_listen and how it is served: plain HTTP on a
// loopback address only, HTTPS with operator certificates (status_tls)
// anywhere else (docs/operations.md#who-may-look-at-the-status-endpoints).
func checkStatus(d *yamlfile.Doc, listen string, useTLS, metricsOpen bool) {
	checkAddr(d, "status_listen", listen, false, addrListen)
	if listen == "" {
		if useTLS {
			d.Errorf("status_tls", "true, but there is no status_listen to serve over HTTPS")
		}
		if metricsOpen {
			d.Errorf("status_metrics_open", "true, but there is no status_listen")
		}
		return
	}
	if !useTLS && !admin.IsLoopback(listen) {
		d.Errorf("status_listen", "%s", plainStatusRefusal(listen))
	}
	if metricsOpen && !useTLS {
		d.Errorf("status_metrics_open", "true without status_tls: true: without TLS there is no client certificate to check, and every path would be open")
	}
}

// plainStatusRefusal says why status_listen on addr, not a loopback
// address, is refused without status_tls, and what to add.
func plainStatusRefusal(addr string) string {
	return fmt.Sprintf("%q is not a loopback address, and the status endpoints are not served there as plain HTTP: "+
		"add status_tls: true (HTTPS with this node's tls certificate; each client needs a certificate from ted pki issue --role operator, "+
		"and status_metrics_open: true lets a scraper read /metrics without one), or listen on 127.0.0.1", addr)
}

func checkKeep(d *yamlfile.Doc, keep **int) {
	if *keep == nil {
		three := 3
		*keep = &three
		return
	}
	if **keep < 1 {
		d.Errorf("keep_revisions", "%d, want at least 1", **keep)
	}
}

func checkMinFree(d *yamlfile.Doc, value string) int64 {
	if value == "" {
		return 0
	}
	n, err := humanize.ParseBytes(value)
	if err != nil || !strings.ContainsAny(value, "BbKkMmGgTt") {
		d.Errorf("min_free_disk", "%q is not a size with a unit (e.g. 1GiB)", value)
		return 0
	}
	return int64(n)
}

func checkTrust(d *yamlfile.Doc, trust []string) []string {
	if len(trust) == 0 {
		d.Errorf("trust", "no publisher key")
		return nil
	}
	out := make([]string, len(trust))
	for i, t := range trust {
		out[i] = resolve(d.File, t)
	}
	return out
}

// loadSchedules opens a daemon's schedule file, checking that it defines
// every schedule the config names (field says where each is named).
func loadSchedules(file *nodeFile, names map[string]string) (*schedule.Source, error) {
	var required []string
	for name := range names {
		required = append(required, name)
	}
	src, err := schedule.NewSource(file.Schedules, required)
	if err == nil {
		return src, nil
	}
	if errors.Is(err, schedule.ErrUnknownSchedule) {
		for name, field := range names {
			if strings.Contains(err.Error(), strconv.Quote(name)) {
				return nil, configError(file.path, field, "%v", err)
			}
		}
	}
	if errors.Is(err, schedule.ErrInvalid) || errors.Is(err, schedule.ErrUnknownSchedule) || errors.Is(err, fs.ErrNotExist) {
		return nil, usageError{fmt.Errorf("%s: schedules: %w", file.path, err)}
	}
	return nil, fmt.Errorf("%s: schedules: %w", file.path, err)
}

func loadDistributorConfig(file string) (*distributorFile, error) {
	var c distributorFile
	d, err := readConfig(file, &c)
	if err != nil {
		return nil, err
	}
	c.checkDistributor(d)
	if err := problems(d); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkDistributor validates a distributor config, recording every problem
// in d.
func (c *distributorFile) checkDistributor(d *yamlfile.Doc) {
	c.check(d, "")
	checkAddr(d, "listen", c.Listen, true, addrListen)
	if len(c.Channels) == 0 {
		d.Errorf("channels", "none: a distributor relays channels")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Channels)) {
		ch := c.Channels[name]
		field := "channels." + name
		if err := distribution.ValidName("channel", name); err != nil {
			d.Errorf(field, "%v", err)
		}
		// Each entry a certificate name, group:NAME or a name pattern;
		// no child entry may take in this node itself.
		if err := distributor.ValidateMembers(field+".publishers", ch.Publishers, ""); err != nil {
			addProblems(d, err)
		}
		if err := distributor.ValidateMembers(field+".children", ch.Children, c.Name); err != nil {
			addProblems(d, err)
		}
		if len(c.Parents) == 0 && len(ch.Publishers) == 0 {
			d.Errorf(field+".publishers", "none, and no parents: nothing could ever arrive")
		}
		ch.Waves.check(d, field+".waves")
	}
	if err := distributor.ValidateClusters(c.clusters()); err != nil {
		addProblems(d, err)
	}
	c.Fleet.check(d)
	c.Agent.check(d)
	if c.Agent != nil && !slices.Contains(slices.Collect(maps.Keys(c.Channels)), c.Agent.Channel) {
		d.Errorf("agent.channel", "%q is not one of channels: a distributor upgrades from a channel it carries", c.Agent.Channel)
	}
	if c.Agent != nil && c.Agent.FollowParent && len(c.Parents) == 0 {
		d.Errorf("agent.follow_parent", "a first-tier distributor has no parent to follow")
	}
	if c.Enroll != nil {
		if c.Enroll.CADir == "" {
			d.Errorf("enroll.ca_dir", "missing: the directory of ca.crt and ca.key (ted pki init); without an enroll block the distributor passes requests on to its parent")
		}
		c.Enroll.CADir = resolve(d.File, c.Enroll.CADir)
	}
}

func loadSubscriberConfig(file string) (*subscriberFile, error) {
	var c subscriberFile
	d, err := readConfig(file, &c)
	if err != nil {
		return nil, err
	}
	c.checkSubscriber(d)
	if err := problems(d); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkSubscriber validates a subscriber config, recording every problem
// in d.
func (c *subscriberFile) checkSubscriber(d *yamlfile.Doc) {
	c.check(d, "")
	if len(c.Parents) == 0 {
		d.Errorf("parents", "none: a subscriber dials at least one distributor")
	}
	if c.Root == "" {
		d.Errorf("root", "missing: every target is extracted under it")
	}
	// Absolute, as actions see it in TED_TARGET: they run in the target,
	// where a relative path would mean something else.
	if root, err := filepath.Abs(resolve(d.File, c.Root)); err == nil {
		c.Root = root
	}
	if len(c.Channels) == 0 {
		d.Errorf("channels", "none: a subscriber receives channels")
	}
	for i, ch := range c.Channels {
		if err := distribution.ValidName("channel", ch); err != nil {
			d.Errorf(fmt.Sprintf("channels[%d]", i), "%v", err)
		}
	}
	if c.Extract == "" {
		c.Extract = schedule.Always
	}
	if c.Cluster != nil {
		c.Cluster.check(d)
	}
	c.Agent.check(d)
}
