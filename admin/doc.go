// Package admin is the operator surface every TED daemon (distributor,
// subscriber, publisher) shares: the HTTP endpoints that monitoring and the
// ted CLI talk to while the daemon holds its store locked.
//
// A Server answers on up to two listeners:
//
//   - the optional status address (config key status_listen), TCP and
//     read-only: GET /healthz, GET /metrics (Prometheus), GET /api/status and
//     GET /api/<view> for the read-only views the daemon registers, and the
//     web console (Endpoints.Pages) on every other GET path. It is plain
//     HTTP on a loopback address only (IsLoopback); anywhere else it must be
//     HTTPS (StatusTLS), where every request needs a client certificate of
//     role operator from the TED CA, except GET /metrics if MetricsOpen;
//   - the admin socket DATA_DIR/admin.sock (SocketPath), a unix socket with
//     mode 0600: the same GET endpoints plus POST /api/<action> for the
//     operator actions the daemon registers ("extract", "rollback").
//
// JSON answers are indented; an error is {"error": "..."} with a status code
// chosen in one place from the sentinel errors (ErrNotFound, ErrInvalid).
// Get and Post are the CLI's side: they talk to the socket and return the
// daemon's error text unchanged, or ErrNoDaemon naming the socket when no
// daemon answers there.
//
// The socket is bound inside a fresh 0700 directory, set to 0600 and only
// then hard-linked to its name, so no other user can connect to it at any
// moment, whatever the umask. A socket file left by a killed daemon is
// removed at start, but only when it is a socket and connecting to it is
// refused; one that answers means another daemon runs on the data directory,
// and Listen fails with ErrAlreadyRunning. A stale file is moved aside and
// probed again before it is deleted, so two daemons starting at once on one
// directory cannot delete each other's live socket. On systems that ignore the permissions of
// socket files (some BSDs), the data directory's mode is what protects the
// socket.
//
// The package must never serve actions on the TCP listener: the handler
// built for it has no access to them, and a POST there is refused. It must
// never remove a socket file it did not create or one that answers, and it
// knows nothing of what the daemon does: status, health, metrics, views and
// actions all come from the daemon through Endpoints.
package admin
