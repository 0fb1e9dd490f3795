package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// SocketName is the admin socket's file name in a daemon's data directory.
const SocketName = "admin.sock"

// SocketPath is where the daemon with data directory dataDir listens for
// the CLI.
func SocketPath(dataDir string) string {
	return filepath.Join(dataDir, SocketName)
}

// socketMode lets only the daemon's user connect: actions change the node.
const socketMode = 0o600

// tempPrefix names the private directory the socket is bound in before it
// gets its name; os.MkdirTemp appends at most 10 digits.
const tempPrefix = ".a"

// maxSocketPath is the longest path a unix socket can be bound at: the size
// of sun_path (108 bytes on Linux, 104 on BSDs and macOS) less its NUL.
var maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

// probeTimeout bounds the connect that tells a live socket from a stale
// one; a live daemon accepts at once.
const probeTimeout = time.Second

// checkSocketPath fails when path, or the temporary name it is bound at
// first, is too long to bind.
func checkSocketPath(path string) error {
	tempLen := len(filepath.Join(filepath.Dir(path), tempPrefix+"0123456789", "s"))
	if n := max(len(path), tempLen); n > maxSocketPath {
		return fmt.Errorf("admin socket %s: path too long for a unix socket (%d bytes with the temporary name it is bound at first, at most %d); use a shorter data_dir",
			path, n, maxSocketPath)
	}
	return nil
}

// socket is a bound admin socket: the listener and the file it owns.
type socket struct {
	ln   *net.UnixListener
	path string
	// file identifies the socket file this process created, so close never
	// removes one that another daemon put there since.
	file fs.FileInfo
}

// listenSocket binds the admin socket at path with mode 0600, with no
// window in which another user could connect: it binds inside a fresh 0700
// directory next to path, sets the mode, and only then links the socket to
// path. Linking fails rather than replace an existing file, which is
// removed first only if it is a stale socket.
func listenSocket(path string, log *slog.Logger) (*socket, error) {
	if err := checkSocketPath(path); err != nil {
		return nil, err
	}
	tempDir, err := os.MkdirTemp(filepath.Dir(path), tempPrefix)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// Removes the temporary name; the socket keeps its other name.
	defer func() { _ = os.RemoveAll(tempDir) }()

	temp := filepath.Join(tempDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: temp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// The listener would unlink its temporary name on Close; path is
	// removed by socket.close, and only if it is still this socket.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*socket, error) {
		_ = ln.Close()
		return nil, err
	}
	if err := os.Chmod(temp, socketMode); err != nil {
		return fail(fmt.Errorf("admin socket %s: %w", path, err))
	}

	// After a stale file is removed, another daemon may link first: the
	// next round finds it answering and reports it.
	for round := 0; ; round++ {
		err := os.Link(temp, path)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || round == 2 {
			return fail(fmt.Errorf("admin socket %s: %w", path, err))
		}
		if err := removeStale(path, tempDir, log); err != nil {
			return fail(err)
		}
	}
	file, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("admin socket: %w", err))
	}
	log.Info("admin socket listening", "path", path)
	return &socket{ln: ln, path: path, file: file}, nil
}

// removeStale removes the file at path if it is a socket a dead daemon
// left: one that refuses connections. A socket that answers means another
// daemon runs on this data directory. To remove only what it probed, even
// when another daemon links its socket at path meanwhile, it first moves the
// file into tempDir and probes it again there; a socket that answers there
// is put back.
func removeStale(path, tempDir string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin socket %s: exists and is not a socket (%v); move it away", path, fi.Mode().Type())
	}
	switch live, err := probe(path); {
	case err != nil:
		return fmt.Errorf("admin socket %s: cannot tell whether a daemon still uses it: %w", path, err)
	case live:
		return fmt.Errorf("%w on %s", ErrAlreadyRunning, path)
	}
	aside := filepath.Join(tempDir, "o") // as short as the name bound there
	if err := os.Rename(path, aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove stale admin socket: %w", err)
	}
	live, err := probe(aside)
	if err == nil && !live {
		log.Info("removed stale admin socket", "path", path)
		return nil // the caller removes tempDir and the stale file in it
	}
	// Another daemon linked its socket at path since the first probe (or
	// this one cannot tell): put it back.
	if linkErr := os.Link(aside, path); linkErr != nil {
		return fmt.Errorf("admin socket %s: put back another daemon's socket: %w", path, linkErr)
	}
	if err != nil {
		return fmt.Errorf("admin socket %s: cannot tell whether a daemon still uses it: %w", path, err)
	}
	return fmt.Errorf("%w on %s", ErrAlreadyRunning, path)
}

// probe connects to the socket at path: live if it answers, not live if it
// refuses or has gone. Any other failure leaves it undecided: an error.
func probe(path string) (live bool, err error) {
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	switch {
	case err == nil:
		_ = conn.Close()
		return true, nil
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// close removes the socket file if it is still the one this process linked
// there, then stops listening. The open listener keeps the file's inode
// from being reused, so SameFile cannot mistake another socket for it.
func (s *socket) close(log *slog.Logger) {
	if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.file) {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cannot remove admin socket", "path", s.path, "err", err)
		}
	}
	_ = s.ln.Close()
}
