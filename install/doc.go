// Package install is TED's installer engine: it extracts signed revisions
// crash-safely under a root directory, keeps a durable record of what each
// distribution installed, and rolls installations back. The subscriber
// daemon (ted/subscriber) drives it, on a single node and on the active
// node of a cluster (ted/subscriber/cluster, which fences it); the agent's
// upgrade of itself is to drive it too. It knows nothing of parents,
// offers, schedules or revision states.
//
// # Overlay semantics
//
// Each revision of a distribution lands in root/TARGET: files land under
// the target, entries that the previously installed revision installed and
// this one dropped are removed (a dropped directory only once it is
// empty), and files TED never installed are never touched. A package
// installs as several parts (Installation.Parts), one per component, each
// with its own target and pre-, post- and undo commands (Actions); a
// distribution of files is one part without commands. The installer keeps
// its own record of what each distribution installed (Installed), so it
// never depends on the store still holding an old manifest.
//
// # The journal
//
// Every step is recorded durably in a journal (one per distribution, in
// the state directory) before it happens; the whole plan (what lands
// where, what goes) is fixed when the extraction begins, so recovery does
// the same thing whatever happened in between. An extraction goes through
// StepBegin, StepBackup, StepWrite, StepRemove, StepCommit and StepPost; a
// rollback through StepRestore and StepUndone. The state directory holds:
//
//	installed/NAME.cbor        the installed revision of NAME
//	journal/NAME.cbor          the extraction or rollback of NAME under way
//	held/NAME.cbor             the revisions of NAME an operator rolled back
//	undo/NAME/SEQ/             how to undo installation SEQ, with its backups
//	journal.log                the journal's history, for people and checkers
//
// Every record is written to a temporary name, synced, renamed over the
// old one and its directory synced, so a crash leaves either record whole.
//
// # Backups and rollback
//
// Before an installation changes anything (StepBackup), what is at every
// path it will touch is recorded in an undo directory, and every file
// there is kept by a hard link (a copy when the state directory is on
// another file system): files are always replaced by renaming a new file
// over them, never changed in place, so the link keeps the old content
// exactly. From that record a rollback puts every path back as it was:
// content, modes, removed files back, added files gone. Options.Keep
// installations of each distribution can be undone, one after the other
// (Installer.Rollback, Installer.History); packages are undone last in,
// first out, and a rollback that would break what another installed
// revision requires is refused unless forced.
//
// # Crash safety
//
// After a crash, Installer.Recover makes every target exactly the old or
// the new revision: an installation interrupted before its commit is
// rolled back (the caller then installs it again from the start,
// pre-action included), unless it is Resumable and was writing or
// removing: then it goes on from its last checkpoint. One interrupted
// after its commit is completed, and its after-step (AfterFunc:
// verification and post-action, which must therefore be safe to run
// again) runs again; an interrupted rollback is finished.
//
// # Hooks
//
// Two hooks stop the work between two changes, as a crash would, with
// nothing undone:
//
//   - Installer.SetHook, for crash tests: it is called at each fault
//     point, the name of a step right after the step is recorded, and
//     "write+1" and "restore+1" after the first file of those steps. The
//     subscriber daemon sets it from TED_TEST_KILL_AT to die there.
//   - Options.Fence, for a cluster node: it is asked before every change
//     under the root and in the state directory, and before every command;
//     once it refuses (the node's lease ended), errors wrap ErrFenced and
//     the journal records who wrote each step (Options.Node and Epoch), so
//     the next active node carries the work on.
//
// # What it must never do
//
// The installer must never write or remove anything outside the root (all
// work goes through os.Root), never remove what it did not install, never
// install a revision that is not newer than the installed one
// (anti-rollback: ErrNotNewer), and never report a revision installed
// before every file of it is durable. Only one Installer may use a state
// directory at a time.
package install
