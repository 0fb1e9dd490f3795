package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"

	"ted/distribution"
	"ted/distributor"
	"ted/pki"
	"ted/schedule"
	"ted/transport"
)

// Config files (CLI.md "Files"). Relative paths in a config file are
// resolved against the file's own directory, so a directory of configs
// (such as the one `ted demo --keep` leaves) works from anywhere.

// tlsFiles names a node's CA, certificate and key.
type tlsFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
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
	Link          linkFile `yaml:"link"`

	path string
	// minFree is MinFreeDisk in bytes.
	minFree int64
}

type distributorFile struct {
	nodeFile `yaml:",inline"`
	Listen   string                        `yaml:"listen"`
	Channels map[string]channelFile        `yaml:"channels"`
	Clusters map[string]clusterMembersFile `yaml:"clusters"`
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

// check validates the common fields and resolves their paths.
// noSchedules, if not empty, says why this kind of daemon refuses a
// schedule file for now.
func (c *nodeFile) check(file, noSchedules string) error {
	c.path = file
	if err := pki.ValidateName(c.Name); err != nil {
		return configError(file, "name", "%v", err)
	}
	if err := checkAddr(file, "status_listen", c.StatusListen, false); err != nil {
		return err
	}
	for i, p := range c.Parents {
		if err := checkAddr(file, fmt.Sprintf("parents[%d]", i), p, true); err != nil {
			return err
		}
	}
	if c.DataDir == "" {
		return configError(file, "data_dir", "missing")
	}
	c.DataDir = resolve(file, c.DataDir)
	if err := c.TLS.check(file); err != nil {
		return err
	}
	var err error
	if c.Trust, err = checkTrust(file, c.Trust); err != nil {
		return err
	}
	if err := checkKeep(file, &c.KeepRevisions); err != nil {
		return err
	}
	if c.minFree, err = checkMinFree(file, c.MinFreeDisk); err != nil {
		return err
	}
	if c.Schedules != "" && noSchedules != "" {
		return configError(file, "schedules", "%s", noSchedules)
	}
	c.Schedules = resolve(file, c.Schedules)
	return c.Link.check(file)
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
func (l *linkFile) check(file string) error {
	for _, f := range []struct {
		field string
		value time.Duration
	}{{"link.handshake_timeout", l.HandshakeTimeout}, {"link.idle_timeout", l.IdleTimeout}, {"link.keepalive", l.Keepalive}, {"link.prefer_parent_every", l.PreferParentEvery}} {
		if f.value < 0 {
			return configError(file, f.field, "%v: must be positive", f.value)
		}
	}
	idle, keep := l.IdleTimeout, l.Keepalive
	def := transport.DefaultQUICConfig()
	if idle == 0 {
		idle = def.MaxIdleTimeout
	}
	if keep == 0 {
		keep = def.KeepAlivePeriod
	}
	if keep >= idle {
		return configError(file, "link.keepalive", "%v must be shorter than the idle timeout %v", keep, idle)
	}
	return nil
}

// apply sets the link's values on the QUIC and parent configs.
func (l *linkFile) apply(q *transport.QUICConfig, parents *transport.ParentsConfig) {
	if l.HandshakeTimeout > 0 {
		q.HandshakeIdleTimeout = l.HandshakeTimeout
	}
	if l.IdleTimeout > 0 {
		q.MaxIdleTimeout = l.IdleTimeout
	}
	if l.Keepalive > 0 {
		q.KeepAlivePeriod = l.Keepalive
	}
	if l.PreferParentEvery > 0 {
		parents.PreferEvery = l.PreferParentEvery
	}
}

type channelFile struct {
	Send       string   `yaml:"send"`
	Publishers []string `yaml:"publishers"`
	Children   []string `yaml:"children"`
}

type subscriberFile struct {
	nodeFile `yaml:",inline"`
	Channels []string     `yaml:"channels"`
	Extract  string       `yaml:"extract"`
	Root     string       `yaml:"root"`
	Cluster  *clusterFile `yaml:"cluster"`
}

// clusterFile is a subscriber's cluster block (CLI.md).
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
func (c *clusterFile) check(file string) error {
	if err := distribution.ValidName("name", c.Name); err != nil {
		return configError(file, "cluster.name", "%v", err)
	}
	if err := distribution.ValidName("node", c.Node); err != nil {
		return configError(file, "cluster.node", "%v", err)
	}
	for field, addrs := range map[string][]string{"bind": {c.Bind}, "join": c.Join} {
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" || port == "" {
				return configError(file, "cluster."+field, "%q: want HOST:PORT", a)
			}
		}
	}
	if c.SecretFile == "" {
		return configError(file, "cluster.secret_file", "missing: the gossip is always encrypted (openssl rand -base64 32 > cluster.key)")
	}
	if c.SharedDir == "" {
		return configError(file, "cluster.shared_dir", "missing: the store and journal live there, on storage every node reaches")
	}
	c.SecretFile, c.SharedDir = resolve(file, c.SecretFile), resolve(file, c.SharedDir)
	return nil
}

// configError names the config file and the field.
func configError(file, field, format string, args ...any) error {
	return usageError{fmt.Errorf("%s: %s: %s", file, field, fmt.Sprintf(format, args...))}
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

// readConfig decodes a YAML config file strictly: an unknown field, a
// second document or a wrong type is an error naming the file and line.
func readConfig(file string, out any) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		if errors.Is(err, io.EOF) {
			return usageError{fmt.Errorf("%s: empty config file", file)}
		}
		return usageError{fmt.Errorf("%s: %s", file, yamlMessage(err))}
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return usageError{fmt.Errorf("%s: more than one YAML document", file)}
	}
	return nil
}

var yamlType = regexp.MustCompile(` in type main\.\w+`)

// yamlMessage makes a yaml.v3 error read well: no "yaml: unmarshal errors"
// preamble, no Go type names.
func yamlMessage(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = yamlType.ReplaceAllString(msg, "")
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "; ")
}

// resolve makes a config path absolute against the config file's directory.
func resolve(configFile, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(configFile), p)
}

func (t *tlsFiles) check(file string) error {
	for _, f := range []struct{ field, value string }{{"tls.ca", t.CA}, {"tls.cert", t.Cert}, {"tls.key", t.Key}} {
		if f.value == "" {
			return configError(file, f.field, "missing")
		}
	}
	t.CA, t.Cert, t.Key = resolve(file, t.CA), resolve(file, t.Cert), resolve(file, t.Key)
	return nil
}

func checkAddr(file, field, addr string, required bool) error {
	if addr == "" {
		if required {
			return configError(file, field, "missing")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return configError(file, field, "%q is not HOST:PORT", addr)
	}
	return nil
}

func checkKeep(file string, keep **int) error {
	if *keep == nil {
		three := 3
		*keep = &three
		return nil
	}
	if **keep < 1 {
		return configError(file, "keep_revisions", "%d, want at least 1", **keep)
	}
	return nil
}

func checkMinFree(file, value string) (int64, error) {
	if value == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(value)
	if err != nil || !strings.ContainsAny(value, "BbKkMmGgTt") {
		return 0, configError(file, "min_free_disk", "%q is not a size with a unit (e.g. 1GiB)", value)
	}
	return int64(n), nil
}

func checkTrust(file string, trust []string) ([]string, error) {
	if len(trust) == 0 {
		return nil, configError(file, "trust", "no publisher key")
	}
	out := make([]string, len(trust))
	for i, t := range trust {
		out[i] = resolve(file, t)
	}
	return out, nil
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
	if errors.Is(err, schedule.ErrInvalid) || errors.Is(err, schedule.ErrUnknownSchedule) {
		return nil, usageError{fmt.Errorf("%s: schedules: %w", file.path, err)}
	}
	return nil, fmt.Errorf("%s: schedules: %w", file.path, err)
}

func loadDistributorConfig(file string) (*distributorFile, error) {
	var c distributorFile
	if err := readConfig(file, &c); err != nil {
		return nil, err
	}
	if err := c.check(file, ""); err != nil {
		return nil, err
	}
	if err := checkAddr(file, "listen", c.Listen, true); err != nil {
		return nil, err
	}
	if len(c.Channels) == 0 {
		return nil, configError(file, "channels", "none")
	}
	for name, ch := range c.Channels {
		field := "channels." + name
		if err := distribution.ValidName("channel", name); err != nil {
			return nil, configError(file, field, "%v", err)
		}
		for i, n := range append(append([]string{}, ch.Publishers...), ch.Children...) {
			if err := pki.ValidateName(n); err != nil {
				return nil, configError(file, field, "name %d: %v", i+1, err)
			}
		}
		if len(c.Parents) == 0 && len(ch.Publishers) == 0 {
			return nil, configError(file, field+".publishers", "none, and no parents: nothing could ever arrive")
		}
	}
	if err := distributor.ValidateClusters(c.clusters()); err != nil {
		return nil, configErrors(file, err)
	}
	return &c, nil
}

func loadSubscriberConfig(file string) (*subscriberFile, error) {
	var c subscriberFile
	if err := readConfig(file, &c); err != nil {
		return nil, err
	}
	if err := c.check(file, ""); err != nil {
		return nil, err
	}
	if len(c.Parents) == 0 {
		return nil, configError(file, "parents", "none")
	}
	if c.Root == "" {
		return nil, configError(file, "root", "missing")
	}
	c.Root = resolve(file, c.Root)
	if len(c.Channels) == 0 {
		return nil, configError(file, "channels", "none")
	}
	for _, ch := range c.Channels {
		if err := distribution.ValidName("channel", ch); err != nil {
			return nil, configError(file, "channels", "%v", err)
		}
	}
	if c.Extract == "" {
		c.Extract = schedule.Always
	}
	if c.Cluster != nil {
		if err := c.Cluster.check(file); err != nil {
			return nil, err
		}
	}
	return &c, nil
}
