#!/usr/bin/env bash
# Cluster failover time (DESIGN §13 budget: a standby active within 15 s of
# the active node's death). Runs the integration test that kills the active
# node of a 2-node and a 3-node cluster (real processes, real QUIC and
# gossip on loopback) in the middle of a transfer, RUNS times, and prints
# each measured failover and the worst as a share of the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
mkdir -p bench/out
out=bench/out/failover.txt
: > "$out"
for i in $(seq "$runs"); do
  go test ./integration -run '^TestClusterFailover$' -count=1 -v 2>&1 |
    grep -o 'web-c[23]: [a-z0-9-]* active [0-9.]*s after' | tee -a "$out"
done
awk '{ s = $4; sub(/s$/, "", s); if (s + 0 > worst) worst = s + 0; n++ }
  END { printf "%d failovers, worst %.1f s: %.2f of the 15 s budget\n", n, worst, worst / 15 }' "$out"
