package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"ted/distribution"
	"ted/store"
)

func newDistCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dist",
		Short: "Build, inspect, verify and extract distributions in a local store",
	}
	cmd.AddCommand(
		newDistBuildCommand(g),
		newDistListCommand(g),
		newDistShowCommand(g),
		newDistVerifyCommand(g),
		newDistExtractCommand(g),
	)
	return cmd
}

// revisionRef is NAME or NAME@REV from the command line; Revision 0 means
// the latest.
type revisionRef struct {
	Name     string
	Revision uint64
}

func (r revisionRef) String() string {
	if r.Revision == 0 {
		return r.Name
	}
	return fmt.Sprintf("%s@%d", r.Name, r.Revision)
}

func parseRevisionRef(arg string) (revisionRef, error) {
	name, rev, found := strings.Cut(arg, "@")
	ref := revisionRef{Name: name}
	if err := distribution.ValidName("distribution name", name); err != nil {
		return ref, usageError{err}
	}
	if found {
		n, err := strconv.ParseUint(rev, 10, 64)
		if err != nil || n == 0 {
			return ref, usageError{fmt.Errorf("%q: a revision is a number from 1 up", arg)}
		}
		ref.Revision = n
	}
	return ref, nil
}

// openStore opens the store at dir; create says whether a missing or empty
// directory becomes a new store.
func openStore(dir string, create bool) (*store.Badger, error) {
	if dir == "" {
		return nil, usageError{errors.New("--store is required")}
	}
	return store.Open(dir, store.Options{Create: create, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
}

// loadSigned returns the signed manifest of ref and its decoded content,
// named in every error.
func loadSigned(st store.Store, ref revisionRef) (*distribution.Signed, *distribution.Manifest, error) {
	if ref.Revision == 0 {
		latest, err := st.Latest(ref.Name)
		if err != nil {
			return nil, nil, err
		}
		ref.Revision = latest.Revision
	}
	signed, err := st.Signed(ref.Name, ref.Revision)
	if err != nil {
		return nil, nil, err
	}
	m, err := signed.Manifest()
	if err != nil {
		return nil, nil, verifyError{fmt.Errorf("%s: %w", ref, err)}
	}
	return signed, m, nil
}

// requireFlag returns a usage error when a required flag is empty.
func requireFlag(name, value string) error {
	if value == "" {
		return usageError{fmt.Errorf("--%s is required", name)}
	}
	return nil
}
