#!/usr/bin/env bash
# Cluster failover (budget: a standby active within 15 s of the active
# node's death; a parent restart costs at most one lease TTL + 2 s without
# an active node). Runs, RUNS times (default 5), the integration tests that
#   - kill the active node of a 2-, a 3- and a 5-node cluster again and
#     again until one node is left (real processes, QUIC and gossip on
#     loopback), and
#   - kill the parent distributor in the middle of an extraction and start
#     it again 3 s later,
# then prints min / median / max per cluster size and for the parent
# restart, each as a share of its budget.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
mkdir -p bench/out
out=bench/out/failover.txt
: > "$out"
for i in $(seq "$runs"); do
  go test ./integration -run '^(TestClusterFailoverInARow|TestClusterParentRestartMidExtraction)$' -count=1 -v 2>&1 |
    grep -oE 'web-c[0-9]+: [a-z0-9-]+ active [0-9.]+s after|parent restart: [0-9.]+s without' | tee -a "$out"
done
summary() { # label budget, seconds on stdin
  sort -n | awk -v label="$1" -v budget="$2" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { printf "%-22s no measurement\n", label; exit }
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%-22s n=%-3d min %4.1f s  median %4.1f s  max %4.1f s  (max %.2f of the %d s budget)\n",
        label, NR, v[1], med, v[NR], v[NR] / budget, budget }'
}
for size in 2 3 5; do
  grep "^web-c$size:" "$out" | awk '{ s = $4; sub(/s$/, "", s); print s }' | summary "$size nodes, every kill" 15
done
grep '^parent restart:' "$out" | awk '{ s = $3; sub(/s$/, "", s); print s }' | summary "parent restart" 8
