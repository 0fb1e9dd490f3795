package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"ted/pki"
	"ted/publisher"
	"ted/transport"
)

type publishOptions struct {
	store string
	to    string
	tls   tlsFiles
	json  bool
}

func newPublishCommand(g *globalOptions) *cobra.Command {
	var opts publishOptions
	cmd := &cobra.Command{
		Use:   "publish --store DIR NAME[@REV] --to HOST:PORT --ca F --cert F --key F",
		Short: "Push a revision to a distributor, sending only the chunks it lacks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.json = g.json
			return runPublish(cmd.Context(), opts, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.store, "store", "", "the publisher's store")
	f.StringVar(&opts.to, "to", "", "the distributor's address, HOST:PORT (UDP)")
	f.StringVar(&opts.tls.CA, "ca", "", "CA certificate")
	f.StringVar(&opts.tls.Cert, "cert", "", "this publisher's certificate (role publisher)")
	f.StringVar(&opts.tls.Key, "key", "", "this publisher's certificate key")
	addJSONFlag(cmd, g)
	return cmd
}

func runPublish(ctx context.Context, opts publishOptions, arg string, stdout, stderr io.Writer) error {
	for _, f := range []struct{ name, value string }{{"to", opts.to}, {"ca", opts.tls.CA}, {"cert", opts.tls.Cert}, {"key", opts.tls.Key}} {
		if err := requireFlag(f.name, f.value); err != nil {
			return err
		}
	}
	ref, err := parseRevisionRef(arg)
	if err != nil {
		return err
	}
	cred, err := transport.LoadCredentials(opts.tls.CA, opts.tls.Cert, opts.tls.Key, pki.RolePublisher)
	if err != nil {
		return err
	}
	st, err := openStore(opts.store, false)
	if err != nil {
		return err
	}
	defer st.Close()
	signed, m, err := loadSigned(st, ref)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	qcfg := transport.DefaultQUICConfig()
	qcfg.Logger = log
	sess, err := transport.Dial(ctx, opts.to, cred, pki.RoleDistributor, qcfg)
	if err != nil {
		return err
	}
	defer sess.Close(nil)
	_, total, _ := m.Totals()
	bar := newProgress(stderr, fmt.Sprintf("publish %s@%d", m.Name, m.Revision), total)
	res, err := publisher.Push(ctx, sess, cred.Self().Name, buildVersion().Version, st, signed,
		func(p publisher.Progress) { bar.update(p.SentBytes) }, log)
	bar.finish(res.SentBytes)
	if err != nil {
		return err
	}
	return printResult(stdout, opts.json, res, func(p *printer) {
		if res.AlreadyStored {
			p.linef("%s@%d (%s): %s already held it", res.Name, res.Revision, res.Version, res.Distributor)
			return
		}
		p.linef("%s@%d (%s) stored by %s: sent %d chunks, %s", res.Name, res.Revision, res.Version, res.Distributor, res.SentChunks, humanBytes(res.SentBytes))
	})
}
