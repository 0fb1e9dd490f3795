package transport

import (
	"fmt"
	"strconv"
	"strings"
)

// ErrIncompatible marks a peer whose TED version is too far from this
// node's to work with it.
var ErrIncompatible = fmt.Errorf("%w: incompatible versions", ErrProtocol)

// MaxMinorSkew is how many minor versions apart two nodes may be and still
// work together: one, so that an upgrade can roll through the tree in any
// order, each node one step ahead of or behind its neighbours.
const MaxMinorSkew = 1

// ParseAgentVersion reads MAJOR.MINOR from a ted version ("1.4.2",
// "v1.4.0-rc1", "1.4.0+12.gabc"); ok is false for one that says nothing of
// its place (a development build: "dev", a test's name).
func ParseAgentVersion(v string) (major, minor int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, false
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		nums[i] = n
	}
	return nums[0], nums[1], true
}

// CheckAgents reports whether the node here (version ours) and the peer
// (version theirs) may work together: the same major version and at most
// MaxMinorSkew minor versions apart. A version that cannot be read (a
// development build) is taken as compatible. The error names both nodes,
// both versions and what to do.
func CheckAgents(here, ours, peer, theirs string) error {
	oMaj, oMin, ok1 := ParseAgentVersion(ours)
	tMaj, tMin, ok2 := ParseAgentVersion(theirs)
	if !ok1 || !ok2 {
		return nil
	}
	skew := oMin - tMin
	if oMaj == tMaj && skew <= MaxMinorSkew && -skew <= MaxMinorSkew {
		return nil
	}
	older, newer, target := peer, here, fmt.Sprintf("%d.%d", oMaj, oMin-MaxMinorSkew)
	if oMaj < tMaj || oMaj == tMaj && oMin < tMin {
		older, newer, target = here, peer, fmt.Sprintf("%d.%d", tMaj, tMin-MaxMinorSkew)
	}
	if oMaj != tMaj {
		target = "the same major version"
	}
	return fmt.Errorf("%w: %s runs ted %s and %s runs ted %s, more than %d minor version apart: upgrade %s to %s or later first (an upgrade rolls through the tree one minor version at a time), or bring %s back to the version before",
		ErrIncompatible, here, ours, peer, theirs, MaxMinorSkew, older, target, newer)
}
