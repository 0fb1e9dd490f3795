package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ted/distribution"
	"ted/pki"
	"ted/store"
)

type distVerifyOptions struct {
	Store string
	Trust []string
}

func (o *distVerifyOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Store, "store", "", "store directory")
	f.StringArrayVar(&o.Trust, "trust", nil, "trusted publisher public key file, FILE.pub (repeatable)")
}

type distVerifyResult struct {
	Verified []verifiedRevision `json:"verified"`
	Failures []verifyFailure    `json:"failures"`
}

type verifiedRevision struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	KeyID    string `json:"key_id"`
	Chunks   int    `json:"chunks"`
}

type verifyFailure struct {
	Name     string `json:"name"`
	Revision uint64 `json:"revision"`
	Path     string `json:"path,omitempty"`
	Chunk    string `json:"chunk,omitempty"`
	Error    string `json:"error"`
}

func newDistVerifyCommand(g *globalOptions) *cobra.Command {
	var opts distVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify [NAME[@REV]]",
		Short: "Check signatures and every chunk of stored revisions (all, or one distribution or revision)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ref *revisionRef
			if len(args) == 1 {
				r, err := parseRevisionRef(args[0])
				if err != nil {
					return err
				}
				ref = &r
			}
			res, err := runDistVerify(cmd.Context(), opts, ref)
			if err != nil {
				return err
			}
			if perr := printResult(cmd.OutOrStdout(), g.json, res, func(p *printer) {
				for _, v := range res.Verified {
					p.linef("ok      %s@%d (key %s, %d chunks)", v.Name, v.Revision, v.KeyID, v.Chunks)
				}
				for _, f := range res.Failures {
					where := ""
					if f.Path != "" {
						where = fmt.Sprintf(" %s chunk %s:", f.Path, f.Chunk)
					}
					p.linef("FAILED  %s@%d:%s %s", f.Name, f.Revision, where, f.Error)
				}
			}); perr != nil {
				return perr
			}
			if len(res.Failures) > 0 {
				f := res.Failures[0]
				return verifyError{fmt.Errorf("verification failed: %d problem(s), first %s@%d: %s", len(res.Failures), f.Name, f.Revision, f.Error)}
			}
			return nil
		},
	}
	opts.AddFlags(cmd.Flags())
	addJSONFlag(cmd, g)
	return cmd
}

func runDistVerify(ctx context.Context, opts distVerifyOptions, ref *revisionRef) (*distVerifyResult, error) {
	if len(opts.Trust) == 0 {
		return nil, usageError{errors.New("--trust is required: the publisher public key(s) to verify against")}
	}
	keys, err := pki.LoadPublicKeys(opts.Trust)
	if err != nil {
		return nil, err
	}
	trust := distribution.NewTrust(keys...)
	st, err := openStore(opts.Store, false)
	if err != nil {
		return nil, err
	}
	defer st.Close()

	targets, err := verifyTargets(st, ref)
	if err != nil {
		return nil, err
	}
	res := &distVerifyResult{Verified: []verifiedRevision{}, Failures: []verifyFailure{}}
	for _, t := range targets {
		fail := func(path, chunk string, err error) {
			res.Failures = append(res.Failures, verifyFailure{Name: t.Name, Revision: t.Revision, Path: path, Chunk: chunk, Error: err.Error()})
		}
		signed, err := st.Signed(t.Name, t.Revision)
		if err != nil {
			fail("", "", err)
			continue
		}
		m, err := trust.Verify(signed)
		if err != nil {
			fail("", "", err)
			continue
		}
		if m.Name != t.Name || m.Revision != t.Revision {
			fail("", "", fmt.Errorf("manifest says %s@%d", m.Name, m.Revision))
			continue
		}
		problems, err := distribution.CheckContent(ctx, m, st, func(p distribution.ContentProblem) {
			fail(p.Path, p.Chunk.String(), p.Err)
		})
		if err != nil {
			return nil, err
		}
		if problems == 0 {
			res.Verified = append(res.Verified, verifiedRevision{Name: t.Name, Revision: t.Revision, KeyID: m.KeyID, Chunks: len(m.ChunkIDs())})
		}
	}
	return res, nil
}

// verifyTargets lists the revisions to verify: one, all of one
// distribution, or everything in the store.
func verifyTargets(st store.Store, ref *revisionRef) ([]revisionRef, error) {
	var names []string
	switch {
	case ref != nil && ref.Revision != 0:
		if _, err := st.Signed(ref.Name, ref.Revision); errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		return []revisionRef{*ref}, nil
	case ref != nil:
		names = []string{ref.Name}
	default:
		var err error
		if names, err = st.Distributions(); err != nil {
			return nil, err
		}
	}
	var out []revisionRef
	for _, name := range names {
		revs, err := st.Revisions(name)
		if err != nil {
			return nil, err
		}
		for _, r := range revs {
			out = append(out, revisionRef{Name: name, Revision: r.Revision})
		}
	}
	return out, nil
}
