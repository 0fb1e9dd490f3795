package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// ErrNoDaemon is what Get and Post return, wrapped with the socket's path,
// when nothing answers on the admin socket.
var ErrNoDaemon = errors.New("no daemon is running")

// maxErrorBody bounds how much of an error answer is read: its text is
// one line.
const maxErrorBody = 64 << 10

// Get asks the daemon listening on socketPath for path ("/api/status",
// "/api/packages", "/healthz") and decodes the JSON answer into out; a nil
// out discards the answer. An error answer comes back as an error with the
// daemon's text.
func Get(ctx context.Context, socketPath, path string, out any) error {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return call(ctx, socketPath, http.MethodGet, path, nil, out)
}

// Post runs the daemon's action with params and decodes its JSON result
// into out (nil discards it). The action's error comes back with the
// daemon's text; errors.Is reports ErrNotFound and ErrInvalid through it.
func Post(ctx context.Context, socketPath, action string, params url.Values, out any) error {
	return call(ctx, socketPath, http.MethodPost, "/api/"+url.PathEscape(action), strings.NewReader(params.Encode()), out)
}

func call(ctx context.Context, socketPath, method, path string, body io.Reader, out any) error {
	// A zero Transport ignores HTTP_PROXY; without keep-alives no connection
	// (and no goroutine) outlives the call.
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}
	defer transport.CloseIdleConnections()

	req, err := http.NewRequestWithContext(ctx, method, "http://admin"+path, body)
	if err != nil {
		return fmt.Errorf("admin socket %s: %s %s: %w", socketPath, method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return requestError(socketPath, method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin socket %s: %s %s: decode answer: %w", socketPath, method, path, err)
	}
	return nil
}

// requestError says plainly when no daemon listens, and otherwise names
// the socket and the request without the URL the client made up.
func requestError(socketPath, method, path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w on %s: no such file", ErrNoDaemon, socketPath)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w on %s: connection refused", ErrNoDaemon, socketPath)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("admin socket %s: %w", socketPath, errno)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	return fmt.Errorf("admin socket %s: %s %s: %w", socketPath, method, path, err)
}

// answerError turns an error answer back into an error with the daemon's
// text: the "error" of a JSON body, or a plain-text body (/healthz).
func answerError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body errorBody
	text := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		text = body.Error
	}
	if text == "" {
		text = "daemon answered " + resp.Status
	}
	return &daemonError{text: text, sentinel: statusError(resp.StatusCode)}
}

// statusError is statusCode (server.go) reversed: the sentinel a status
// code stands for, or nil.
func statusError(code int) error {
	switch code {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusBadRequest:
		return ErrInvalid
	default:
		return nil
	}
}

// daemonError is an error the daemon answered with: its text unchanged,
// and the sentinel its status code stands for.
type daemonError struct {
	text     string
	sentinel error
}

func (e *daemonError) Error() string { return e.text }
func (e *daemonError) Unwrap() error { return e.sentinel }
