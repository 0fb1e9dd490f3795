package transport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"

	"ted/pki"
)

// KeptRevocationsFile is the file, in a node's data_dir, where it keeps the
// newest revocation list its parent sent, so that a restart does not forget
// a revocation that the node's own tls.crl (if any) does not carry yet.
const KeptRevocationsFile = "revoked.crl"

// RevocationKeeper holds a node's revocation list: the newest, by CRL
// number, of the file its config names (tls.crl), the list it kept from a
// parent, and every list that arrives later. Every list is checked against
// the CA's certificates; an older or equal list is ignored, so neither a
// stale file nor a parent can take back a revocation. The list in force
// is set on the node's credentials, checked at every handshake, and whoever
// waits on Changed is told when it changes. Safe for concurrent use.
type RevocationKeeper struct {
	cas  []*x509.Certificate
	kept string
	cred *Credentials

	mu      sync.Mutex
	cur     *pki.Revocations
	changed chan struct{}
}

// NewRevocationKeeper keeps lists signed by one of cas, sets each on cred
// (nil: none) and writes lists from a parent to kept (empty: not kept).
func NewRevocationKeeper(cas []*x509.Certificate, kept string, cred *Credentials) *RevocationKeeper {
	return &RevocationKeeper{cas: cas, kept: kept, cred: cred, changed: make(chan struct{})}
}

// Load loads the list kept from a parent, then the configured file, if
// any: a configured file that is missing or does not check out is an
// error; a kept list that no longer checks out (the CA was replaced) is
// logged and ignored.
func (k *RevocationKeeper) Load(file string, log *slog.Logger) error {
	if k.kept != "" {
		r, err := pki.LoadRevocations(k.kept, k.cas)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			log.Warn("revocation list kept from the parent ignored", "err", err)
		default:
			k.Update(r)
		}
	}
	if file == "" {
		return nil
	}
	r, err := pki.LoadRevocations(file, k.cas)
	if err != nil {
		return err
	}
	k.Update(r)
	return nil
}

// LoadFile loads the configured file again (a reload) and reports whether
// its list is newer than the one in force, which it then replaces.
func (k *RevocationKeeper) LoadFile(file string) (bool, error) {
	r, err := pki.LoadRevocations(file, k.cas)
	if err != nil {
		return false, err
	}
	return k.Update(r), nil
}

// Update makes r the list in force if it is newer than the one in force,
// and reports whether it was.
func (k *RevocationKeeper) Update(r *pki.Revocations) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !r.Newer(k.cur) {
		return false
	}
	k.cur = r
	if k.cred != nil {
		k.cred.SetRevocations(r)
	}
	close(k.changed)
	k.changed = make(chan struct{})
	return true
}

// Receive takes the list a parent (peer) sent: it checks it against the
// CA, and if it is newer keeps it in the data_dir and puts it in force. It
// returns the list in force after it and whether it changed.
func (k *RevocationKeeper) Receive(peer string, m *Revocations) (*pki.Revocations, bool, error) {
	r, err := pki.ParseRevocations("revocation list from "+peer, m.CRL, k.cas)
	if err != nil {
		return k.Current(), false, err
	}
	if !r.Newer(k.Current()) {
		return k.Current(), false, nil
	}
	// Written before it is in force: a node that restarts must not find
	// an older list than the one it acted on.
	if err := k.keep(r); err != nil {
		return k.Current(), false, err
	}
	return r, k.Update(r), nil
}

// keep writes r to the kept file, atomically.
func (k *RevocationKeeper) keep(r *pki.Revocations) error {
	if k.kept == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.kept), ".revoked-*.crl")
	if err != nil {
		return fmt.Errorf("keep revocation list: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	_, err = tmp.Write(pki.EncodeRevocations(r))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), k.kept)
	}
	if err != nil {
		return fmt.Errorf("keep revocation list in %s: %w", k.kept, err)
	}
	return nil
}

// Current is the list in force, nil if none.
func (k *RevocationKeeper) Current() *pki.Revocations {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// Changed is closed when the list in force next changes.
func (k *RevocationKeeper) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// Message is the list in force as a child is sent it, nil if none.
func (k *RevocationKeeper) Message() *Revocations {
	m, _ := k.MessageFor("")
	return m
}

// MessageFor is the list in force as a child that holds the list numbered
// held (Hello.CRLNumber, "" for none) is sent it, and its number: nil if
// there is none or the child's is as new.
func (k *RevocationKeeper) MessageFor(held string) (*Revocations, string) {
	r := k.Current()
	if r == nil {
		return nil, ""
	}
	if n, ok := new(big.Int).SetString(held, 10); ok && r.Number.Cmp(n) <= 0 {
		return nil, ""
	}
	return &Revocations{CRL: r.Raw}, r.Number.String()
}

// HeldNumber is the number of the list in force, as a child tells it in
// its hello (Hello.CRLNumber): "" if none.
func (k *RevocationKeeper) HeldNumber() string {
	if r := k.Current(); r != nil {
		return r.Number.String()
	}
	return ""
}
