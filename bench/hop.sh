#!/usr/bin/env bash
# One hop over QUIC on loopback, against its reference in the same run
# (budget: ≥ 0.7 × raw; bench/README.md): `ted publish` of SIZE_MIB of incompressible data into one
# distributor, against raw quic-go sending the same byte count on one stream
# (bench/quicraw, TED's TLS and flow-control windows). Also the peak RSS of
# the distributor and of the publish process at two sizes (SMALL_MIB and
# SIZE_MIB), for "node RSS does not grow with distribution size".
#
#   SIZE_MIB   distribution size, MiB (default 1024)
#   SMALL_MIB  the second size, for RSS (default SIZE_MIB/4)
#   FILES      files the data is split into (default 8)
#   PERF=1     record the SIZE_MIB hop (distributor and publisher) and the
#              second raw run (server and client) with perf, and split their
#              CPU by component: bench/out/hop-perf.txt. perf slows what it
#              records, so the ratio of such a run is not the budget's figure.
#   HEAPPROF=1 build ted with a bench-only file (go build -overlay; nothing
#              is added to the tree) that writes a heap profile at each new
#              peak of the heap in use, and print the top of the distributor's
#              and the publisher's last one: bench/out/hop-heap-*.txt
#   WORK       scratch directory (default: mktemp -d; deleted at the end)
#
# Timed for the hop: wall clock from the start of `ted publish` to its exit:
# process start, store open, QUIC+TLS handshake, offer, every chunk fetched,
# checked (SHA-256) and stored by the distributor, the distributor's final
# store sync and commit of the revision, and its answer. The build that fills
# the publisher's store is timed apart and is not part of the hop. Timed for
# raw: from before the dial until the peer has read every byte (its count
# comes back on the stream). Figures and how to read them: bench/README.md.
# Results: bench/out/hop.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
size_mib=${SIZE_MIB:-1024}
small_mib=${SMALL_MIB:-$((size_mib / 4))}
files=${FILES:-8}
mkdir -p bench/out
out=bench/out/hop.txt
: >"$out"
say() { echo "$*" | tee -a "$out"; }

bench_work
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $keep == 0 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- UDP buffers: quic-go wants 7 MiB on each socket.
raise_udp_buffers | tee -a "$out"

# ---- binaries
if [[ ${HEAPPROF:-} == 1 ]]; then
  cat >"$work/heapprof.go" <<'GO'
package main

// Bench-only, compiled in by bench/hop.sh through go build -overlay: with
// TED_HEAPPROF set, write a heap profile there each time the heap in use
// passes its previous peak by 1 MiB.

import (
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

func init() {
	file := os.Getenv("TED_HEAPPROF")
	if file == "" {
		return
	}
	go func() {
		var peak uint64
		for range time.Tick(100 * time.Millisecond) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse < peak+1<<20 {
				continue
			}
			peak = ms.HeapInuse
			if f, err := os.Create(file + ".tmp"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
				_ = os.Rename(file+".tmp", file)
			}
		}
	}()
}
GO
  printf '{"Replace": {"%s/cmd/ted/zz_bench_heapprof.go": "%s/heapprof.go"}}\n' "$PWD" "$work" >"$work/overlay.json"
  go build -overlay "$work/overlay.json" -o "$work/ted" ./cmd/ted
else
  go build -o "$work/ted" ./cmd/ted
fi
go build -o "$work/quicraw" ./bench/quicraw
ted=$work/ted

cpu_ticks() { # pid -> utime+stime in clock ticks
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
busy_ticks() { # CPU time used by everything on the machine, in clock ticks
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}
hwm_kib() { # pid -> VmHWM in KiB
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}
tck=$(getconf CLK_TCK)
field() { # json-key < json -> number
  tr -d '\n ' | sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"
}
now() { date +%s.%N; }

# ---- raw quic-go reference: one server for every run
"$work/quicraw" serve --listen 127.0.0.1:0 --addr-file "$work/raw.addr" &
raw_pid=$!
pids+=("$raw_pid")
for _ in $(seq 100); do [[ -s $work/raw.addr ]] && break; sleep 0.05; done
raw_addr=$(cat "$work/raw.addr")

raw_mbps=()
raw_cpu=()
raw() { # bytes [perf] -> appends to raw_mbps, raw_cpu (client+server CPU-seconds)
  local s0 m0 m1 j mbps c secs perf_s= run=("$work/quicraw" send --to "$raw_addr" --bytes "$1" --json)
  if [[ ${2:-} == perf ]]; then
    perf record -F 499 -g -o "$work/perf-rawsrv.data" -p "$raw_pid" 2>/dev/null &
    perf_s=$!
    sleep 0.5
    run=(perf record -F 499 -g -o "$work/perf-rawcli.data" -- "${run[@]}")
  fi
  s0=$(cpu_ticks "$raw_pid")
  m0=$(busy_ticks)
  j=$(/usr/bin/time -f '%U %S %M' -o "$work/raw.time" "${run[@]}" 2>/dev/null)
  if [[ -n $perf_s ]]; then
    kill -INT "$perf_s"
    wait "$perf_s" || true
  fi
  m1=$(busy_ticks)
  mbps=$(field mb_per_s <<<"$j")
  secs=$(field seconds <<<"$j")
  c=$(awk -v s0="$s0" -v s1="$(cpu_ticks "$raw_pid")" -v t="$tck" '{ printf "%.2f", $1 + $2 + (s1 - s0) / t }' "$work/raw.time")
  raw_mbps+=("$mbps")
  raw_cpu+=("$c")
  printf 'raw quic-go, %d MiB, one stream: %.1f MB/s; CPU-seconds client+server %s (%.2f cores), everything else on the machine %.2f\n' \
    $(($1 >> 20)) "$mbps" "$c" "$(awk -v c="$c" -v w="$secs" 'BEGIN { print c / w }')" \
    "$(awk -v a="$m0" -v z="$m1" -v c="$c" -v t="$tck" 'BEGIN { v = (z - a) / t - c; print (v < 0 ? 0 : v) }')" | tee -a "$out"
}

# ---- PKI and keys (one set for both sizes)
mkdir -p "$work/pki"
(
  cd "$work"
  "$ted" pki init --dir pki >/dev/null
  "$ted" pki issue --dir pki --name dist-1 --role distributor --host 127.0.0.1 >/dev/null
  "$ted" pki issue --dir pki --name pub-1 --role publisher >/dev/null
  "$ted" pki signing-key --out pki/publisher.key >/dev/null
)

hops=0
declare -A dist_split hop_mbps dist_hwm pub_hwm dist_cpu pub_cpu build_mbps
hop() { # MiB [perf] -> fills the arrays above for that size
  local mib=$1 bytes=$(($1 << 20)) dir=$work/hop-$1 port d_pid t0 t1 j c0 c1 m0 m1 st
  mkdir -p "$dir/src"
  local each=$((bytes / files))
  for i in $(seq "$files"); do
    head -c "$each" /dev/urandom >"$dir/src/part-$i.bin"
  done
  sync
  t0=$(now)
  j=$("$ted" dist build --store "$dir/pub" --name big --from "$dir/src" --version 1.0.0 --channel web \
    --sign-key "$work/pki/publisher.key" --json 2>"$dir/build.log")
  sync # the build's writeback must not land inside the hop
  t1=$(now)
  build_mbps[$mib]=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f", b / 1e6 / (z - a) }')
  rm -rf "$dir/src" # not needed any more: frees page cache for the hop

  hops=$((hops + 1))
  port=$((17400 + 10 * hops))
  cat >"$dir/distributor.yaml" <<EOF
name: dist-1
listen: 127.0.0.1:$port
data_dir: ./var
tls: {ca: ../pki/ca.crt, cert: ../pki/dist-1.crt, key: ../pki/dist-1.key}
trust: [../pki/publisher.key.pub]
status_listen: 127.0.0.1:$((port + 1))
channels:
  web:
    publishers: [pub-1]
    children: [web-01]
EOF
  TED_HEAPPROF=${HEAPPROF:+$dir/dist.heap} "$ted" distributor run --config "$dir/distributor.yaml" 2>"$dir/distributor.log" &
  d_pid=$!
  pids+=("$d_pid")
  for _ in $(seq 200); do
    grep -q 'distributor running' "$dir/distributor.log" && break
    sleep 0.05
  done
  grep -q 'distributor running' "$dir/distributor.log" || { cat "$dir/distributor.log"; exit 1; }

  local perf_d=
  if [[ ${2:-} == perf ]]; then
    perf record -F 499 -g -o "$work/perf-dist.data" -p "$d_pid" 2>/dev/null &
    perf_d=$!
    sleep 0.5
  fi
  c0=$(cpu_ticks "$d_pid")
  m0=$(busy_ticks)
  local run=("$ted" publish --store "$dir/pub" big --to "127.0.0.1:$port" --ca "$work/pki/ca.crt" \
    --cert "$work/pki/pub-1.crt" --key "$work/pki/pub-1.key" --json)
  if [[ ${2:-} == perf ]]; then
    run=(perf record -F 499 -g -o "$work/perf-pub.data" -- "${run[@]}")
  fi
  t0=$(now)
  j=$(TED_HEAPPROF=${HEAPPROF:+$dir/pub.heap} /usr/bin/time -f '%U %S %M' -o "$dir/publish.time" "${run[@]}" 2>"$dir/publish.log") ||
    { cat "$dir/publish.log"; exit 1; }
  t1=$(now)
  c1=$(cpu_ticks "$d_pid")
  m1=$(busy_ticks)
  dist_hwm[$mib]=$(hwm_kib "$d_pid")
  dist_split[$mib]=$(awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s %d MiB, ", $1, $2 / 1024 }' "/proc/$d_pid/status")
  if [[ -n $perf_d ]]; then
    kill -INT "$perf_d"
    wait "$perf_d" || true
  fi
  kill -TERM "$d_pid"
  wait "$d_pid" || true
  st=$(field sent_bytes <<<"$j")
  hop_mbps[$mib]=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / 1e6 / (z - a) }')
  pub_hwm[$mib]=$(awk '{ print $3 }' "$dir/publish.time")
  pub_cpu[$mib]=$(awk '{ printf "%.2f", $1 + $2 }' "$dir/publish.time")
  dist_cpu[$mib]=$(awk -v a="$c0" -v z="$c1" -v t="$tck" 'BEGIN { printf "%.2f", (z - a) / t }')
  printf 'hop, %d MiB: build %s MB/s (not in the hop); publish %.2f s wall = %s MB/s; sent_chunks %s, sent_bytes %s\n' \
    "$mib" "${build_mbps[$mib]}" "$(awk -v a="$t0" -v z="$t1" 'BEGIN { print z - a }')" "${hop_mbps[$mib]}" \
    "$(field sent_chunks <<<"$j")" "$st" | tee -a "$out"
  printf '  CPU-seconds during the hop: publisher %s, distributor %s (%.2f cores), everything else on the machine %.2f\n' \
    "${pub_cpu[$mib]}" "${dist_cpu[$mib]}" "$(awk -v p="${pub_cpu[$mib]}" -v d="${dist_cpu[$mib]}" -v a="$t0" -v z="$t1" 'BEGIN { print (p + d) / (z - a) }')" \
    "$(awk -v a="$m0" -v z="$m1" -v p="${pub_cpu[$mib]}" -v d="${dist_cpu[$mib]}" -v t="$tck" 'BEGIN { v = (z - a) / t - p - d; print (v < 0 ? 0 : v) }')" | tee -a "$out"
  printf '  peak RSS: publisher %d MiB, distributor %d MiB\n' $((pub_hwm[$mib] / 1024)) $((dist_hwm[$mib] / 1024)) | tee -a "$out"
  say "  distributor after the hop, before it stops: ${dist_split[$mib]%, }"
  if [[ ${HEAPPROF:-} == 1 ]]; then
    for who in dist pub; do
      go tool pprof -sample_index=inuse_space -top -nodecount=15 "$ted" "$dir/$who.heap" 2>/dev/null \
        >"bench/out/hop-heap-$mib-$who.txt" || true
    done
    say "  live heap at the peak of heap in use: bench/out/hop-heap-$mib-{dist,pub}.txt"
  fi
  rm -rf "$dir/pub" "$dir/var"
}

say "ted one hop: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, $(go env GOVERSION), $(date -u +%FT%TZ)"
say "UDP buffers: rmem_max $(sysctl -n net.core.rmem_max), wmem_max $(sysctl -n net.core.wmem_max)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running skews both sides; the ratio less than the figures)"
raw $((size_mib << 20))
hop "$small_mib"
if [[ ${PERF:-} == 1 ]]; then hop "$size_mib" perf; else hop "$size_mib"; fi
if [[ ${PERF:-} == 1 ]]; then raw $((size_mib << 20)) perf; else raw $((size_mib << 20)); fi

say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
best=$(printf "%s\n" "${raw_mbps[@]}" | sort -g | tail -1 | awk "{ printf \"%.1f\", \$1 }")
mean=$(printf '%s\n' "${raw_mbps[@]}" | awk '{ s += $1 } END { printf "%.1f", s / NR }')
say ""
say "hop $size_mib MiB: ${hop_mbps[$size_mib]} MB/s; raw quic-go (better of 2 runs, before and after): $best MB/s, mean $mean MB/s"
awk -v h="${hop_mbps[$size_mib]}" -v b="$best" -v m="$mean" 'BEGIN {
  r = h / b
  printf "ratio hop/raw: %.2f against the better raw run (%.2f against the mean); budget 0.70: %s\n", r, h / m, (r >= 0.7 ? "met" : "NOT met")
}' | tee -a "$out"
say "peak RSS (VmHWM) distributor: $((dist_hwm[$small_mib] / 1024)) MiB at $small_mib MiB, $((dist_hwm[$size_mib] / 1024)) MiB at $size_mib MiB"
say "peak RSS (GNU time) publisher: $((pub_hwm[$small_mib] / 1024)) MiB at $small_mib MiB, $((pub_hwm[$size_mib] / 1024)) MiB at $size_mib MiB"
awk -v a="${dist_hwm[$small_mib]}" -v b="${dist_hwm[$size_mib]}" -v c="${pub_hwm[$small_mib]}" -v d="${pub_hwm[$size_mib]}" \
  'BEGIN { printf "RSS ratio large/small (1.0 = no growth): distributor %.2f, publisher %.2f\n", b / a, d / c }' | tee -a "$out"

# perf_split DATA: where a process's sampled CPU went, by component. A
# sample goes to the first rule that matches a frame of its stack.
perf_split() {
  perf script -i "$1" -F period,ip,sym 2>/dev/null | awk '
    function flush(   i, r, hit) {
      if (n == 0) return
      total += period
      for (r = 1; r <= nr; r++) {
        for (i = 1; i <= n; i++) if (index(st[i], pat[r, 1]) || (pat[r, 2] != "" && index(st[i], pat[r, 2])) || (pat[r, 3] != "" && index(st[i], pat[r, 3]))) { hit = r; break }
        if (hit) break
      }
      if (!hit) hit = nr + 1
      sum[hit] += period
      n = 0
    }
    function rule(label, a, b, c) { nr++; name[nr] = label; pat[nr, 1] = a; pat[nr, 2] = b; pat[nr, 3] = c }
    BEGIN {
      rule("quicraw: making its random payload (before its clock)", "rand/v2.(*ChaCha8)", "", "")
      rule("store: pack write (write(2) into page cache, sync)", "packs).append", "packs).sync", "")
      rule("store: pack read (pread)", "packs).read", "", "")
      rule("verify: SHA-256 of each chunk", "DecodeChunk", "", "")
      rule("store: badger (index lookups and writes, compaction)", "dgraph-io/badger", "", "")
      rule("store: other", "ted/store", "", "")
      rule("TED framing, stream Read/Write, bufio", "transport.(*Conn).", "ReceiveStream).Read", "SendStream).Write")
      rule("QUIC send: pack, seal, sendmsg (loopback delivery included)", "sendPackets", "sendQueue", "appendPacket")
      rule("QUIC receive: recvmmsg, open, frames, acks", "handlePackets", "Transport).listen", "ReadPacket")
      rule("QUIC other", "quic-go", "", "")
      rule("GC (background)", "gcBgMarkWorker", "bgsweep", "bgscavenge")
      rule("scheduler, sysmon, context switches", "runtime.schedule", "sysmon", "runtime.mcall")
      name[nr + 1] = "other"
    }
    /^[ \t]*[0-9]+[ \t]*$/ { flush(); period = $1; next }
    /^[ \t]*$/ { flush(); next }
    { n++; st[n] = $0 }
    END {
      flush()
      for (r = 1; r <= nr + 1; r++) if (sum[r] > 0) printf "  %5.1f%%  %6.2f s  %s\n", 100 * sum[r] / total, sum[r] / 1e9, name[r]
      printf "  total %.2f CPU-s sampled (perf itself slows everything; read the shares)\n", total / 1e9
    }'
}
if [[ ${PERF:-} == 1 ]]; then
  {
    echo "perf, $size_mib MiB: where the CPU went (perf record -F 499 -g; cpu-clock samples)"
    echo "distributor (ted distributor run):"; perf_split "$work/perf-dist.data"
    echo "raw server (quicraw serve):"; perf_split "$work/perf-rawsrv.data"
    echo "publisher (ted publish):"; perf_split "$work/perf-pub.data"
    echo "raw client (quicraw send):"; perf_split "$work/perf-rawcli.data"
  } >bench/out/hop-perf.txt
  for who in dist pub; do
    perf report -i "$work/perf-$who.data" --children --sort symbol --stdio -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//' | head -150 >"bench/out/hop-perf-$who-top.txt" || true # head closes the pipe early
  done
  cat bench/out/hop-perf.txt
  say "perf: bench/out/hop-perf.txt (by component), bench/out/hop-perf-{dist,pub}-top.txt (inclusive, by function)"
fi
