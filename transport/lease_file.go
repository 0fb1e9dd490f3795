package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"ted/distribution"
)

// leaseFileVersion is the format of the lease table's file.
const leaseFileVersion = 1

// leaseFile is what OpenLeases keeps on disk: JSON, so an operator can read
// who held which lease when the parent stopped.
type leaseFile struct {
	Version  int                    `json:"version"`
	Clusters map[string]leaseRecord `json:"clusters"`
}

// leaseRecord is one cluster's lease: its holder (node#instance, "" once
// released) and the epoch it was granted under.
type leaseRecord struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
}

// OpenLeases returns a lease table that records each cluster's holder and
// epoch in file, durably, at every new grant and release; renewals only
// extend the expiry and are not written. It loads what file holds (none:
// an empty table): each recorded holder holds its lease again, under its
// epoch, until one TTL after the start, and may renew it at once; every
// other node waits for that grace as after any start. A later grant gets a
// larger epoch than any recorded.
//
// A file that cannot be read as a lease table is an error: starting
// without it would refuse the holder that may still be acting, so the
// operator decides.
func OpenLeases(file string, ttl time.Duration, now func() time.Time) (*Leases, error) {
	l := NewLeases(ttl, now)
	l.file = file
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease table: %w", err)
	}
	recs, err := decodeLeaseFile(data)
	if err != nil {
		return nil, fmt.Errorf("lease table %s is damaged (%v): remove it and start again; "+
			"the cost: no cluster node is granted a lease during the first %v after the start, so a cluster may have no active node that long", file, err, ttl)
	}
	start := l.now()
	for name, r := range recs.Clusters {
		cur := &lease{holder: r.Holder, epoch: r.Epoch, expires: start}
		if r.Holder != "" {
			// It may still believe it holds the lease, and it does, no
			// longer than any lease granted before the start could last.
			cur.expires = l.grace
		}
		l.byName[name] = cur
	}
	return l, nil
}

// decodeLeaseFile reads a lease file strictly: a field it does not know,
// trailing bytes, a bad name or a zero epoch is damage, not something to
// guess about.
func decodeLeaseFile(data []byte) (*leaseFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f leaseFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the table")
	}
	if f.Version != leaseFileVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, leaseFileVersion)
	}
	for name, r := range f.Clusters {
		if err := distribution.ValidName("cluster", name); err != nil {
			return nil, err
		}
		if r.Epoch == 0 {
			return nil, fmt.Errorf("cluster %s: epoch 0", name)
		}
	}
	return &f, nil
}

// saveLocked writes the table with cluster's lease set to next, before it
// is set here: a grant is given only once a restart would know it. Without
// a file it does nothing.
func (l *Leases) saveLocked(cluster string, next *lease) error {
	if l.file == "" {
		return nil
	}
	f := leaseFile{Version: leaseFileVersion, Clusters: make(map[string]leaseRecord, len(l.byName)+1)}
	for name, cur := range l.byName {
		f.Clusters[name] = leaseRecord{Holder: cur.holder, Epoch: cur.epoch}
	}
	f.Clusters[cluster] = leaseRecord{Holder: next.holder, Epoch: next.epoch}
	_, err := distribution.WriteFileAtomic(l.file, 0o600, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(&f)
	})
	if err != nil {
		return fmt.Errorf("record the lease of cluster %s in %s: %w", cluster, l.file, err)
	}
	return nil
}
