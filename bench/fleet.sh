#!/usr/bin/env bash
# A fleet of subscribers against one distributor (issue 14's targets for
# 10,000: idle RSS ≤ 512 MiB, peak ≤ 1 GiB during a publish, idle ≤ 5 % of
# one core, offer to all ≤ 5 s, all holding a 1 MiB revision ≤ 60 s,
# `ted distributor status --json` ≤ 1 s, no refused or dropped sessions).
# Builds ted and bench/fleet, then runs the fleet at each size in SIZES,
# one after the other, each against a fresh `ted distributor run`:
# N simulated subscribers in one process, each a real QUIC + mutual TLS
# session with its own certificate, sharing UDP sockets. Figures and how to
# read them: bench/README.md ("Fleet").
#
#   SIZES      numbers of subscribers (default 1000,3000,10000)
#   IDLE       idle window over which the distributor's CPU is measured
#              (default 60s)
#   EXTRA      more flags for bench/fleet (go run ./bench/fleet -h)
#   WORK       work directory, kept (default: a temporary one, removed)
#
# Results: bench/out/fleet.txt (the table) and bench/out/fleet.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
sizes=${SIZES:-1000,3000,10000}
idle=${IDLE:-60s}
mkdir -p bench/out

# QUIC asks for 7 MiB socket buffers; at the kernel's default cap a burst
# of thousands of handshakes overflows the distributor's socket.
raise_udp_buffers >&2
# Sockets, pack files, admin connections: more than the default 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || echo "warning: cannot raise the open-file limit above $(ulimit -n)" >&2

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/ted" ./cmd/ted
go build -o "$bin/fleet" ./bench/fleet
args=(-ted "$bin/ted" -n "$sizes" -idle "$idle" -json bench/out/fleet.json)
if [[ -n ${WORK:-} ]]; then
  args+=(-dir "$WORK" -keep)
fi
echo "commit $(git log -1 --format=%h 2>/dev/null || echo unknown); $(git status --short 2>/dev/null | wc -l) files changed in the work tree" | tee bench/out/fleet.txt
# shellcheck disable=SC2086 # EXTRA is a list of flags
"$bin/fleet" "${args[@]}" ${EXTRA:-} | tee -a bench/out/fleet.txt
