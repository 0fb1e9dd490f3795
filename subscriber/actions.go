package subscriber

import (
	"context"
	"log/slog"
	"time"

	"ted/distribution"
	"ted/install"
)

// runActions runs a revision's pre or post commands (dist build
// --pre/--post, install.Actions) in dir, stopping at the first that fails;
// fence, if set, is asked before each. The daemon runs a distribution's
// pre-action before it hands the revision to the installer, and its
// post-action in the installer's after-step.
func runActions(ctx context.Context, phase string, cmds []string, m *distribution.Manifest, dir, target string, timeout time.Duration, log *slog.Logger, fence func() error) error {
	a := install.Actions{Name: m.Name, Revision: m.Revision, Version: m.Version, Dir: dir, Target: target,
		Timeout: timeout, Log: log, Fence: fence}
	return a.Run(ctx, phase, cmds)
}
