//go:build tedpprof

package distributor

import (
	"net/http"
	_ "net/http/pprof" // the profiles, on http.DefaultServeMux
	"os"
)

// A ted built with -tags tedpprof serves the runtime's profiles on the
// address in TED_PPROF, for bench/fleet: never in a release build.
func init() {
	if addr := os.Getenv("TED_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
