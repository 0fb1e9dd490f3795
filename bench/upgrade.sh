#!/usr/bin/env bash
# What an upgrade costs on the wire and on disk, against rsync and binary
# deltas of the same trees, in the same run (bench/README.md). For each
# pair of trees, old then new:
#
#   TED      the bytes on the distributor -> subscriber hop, both ways
#            (QUIC and TLS included: IP packet bytes, counted by iptables
#            rules on the hop's address), for the upgrade from the old
#            revision to the new one; and the subscriber's extraction time
#            of the new one (its log's took=). Also the bytes of a
#            subscriber restart with nothing new.
#   rsync    rsync -az --checksum --no-whole-file through `rsync --daemon`
#            on loopback, from a copy of the old tree to the new one: bytes
#            sent + received (its --stats, TCP payload).
#   zstd     zstd -19 --long=31 --patch-from=old.tar new.tar (tars sorted by
#            name): the patch size
#            (-3 for tars over 512 MiB: -19 takes minutes a GiB).
#   xdelta3  xdelta3 -9 -s old.tar new.tar: the delta size.
#
# The pairs:
#   tools    golang.org/x/tools TOOLS_OLD -> TOOLS_NEW, sources from the
#            module proxy (default v0.51.0 -> v0.52.0)
#   gopls    the gopls binary of GOPLS_OLD -> GOPLS_NEW, built from the
#            module proxy (default v0.22.0 -> v0.23.0)
#   gen      generated: GEN_FILES files (default 10000), GEN_MIB MiB of
#            random data in all (default 1024); the new tree changes a few
#            bytes in 1 % of the files
#
#   PAIRS    which pairs to run (default "tools gopls gen")
#   WORK     scratch directory (default: mktemp -d; deleted at the end)
#
# Needs root (iptables counters, UDP buffers) and rsync, zstd, xdelta3 and
# iptables, which it installs with apt-get if they are missing.
# Results: bench/out/upgrade.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
pairs=${PAIRS:-tools gopls gen}
tools_old=${TOOLS_OLD:-v0.51.0} tools_new=${TOOLS_NEW:-v0.52.0}
gopls_old=${GOPLS_OLD:-v0.22.0} gopls_new=${GOPLS_NEW:-v0.23.0}
gen_files=${GEN_FILES:-10000} gen_mib=${GEN_MIB:-1024}
mkdir -p bench/out
out=bench/out/upgrade.txt
: >"$out"
say() { echo "$*" | tee -a "$out"; }

if [[ $(id -u) != 0 ]]; then
  echo "bench/upgrade.sh: needs root (iptables byte counters)" >&2
  exit 2
fi
missing=()
for tool in rsync zstd xdelta3 iptables; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bench_work
pids=()
rules=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for r in "${rules[@]}"; do iptables -D OUTPUT $r 2>/dev/null || true; done
  if [[ $keep == 0 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- UDP buffers: quic-go wants 7 MiB on each socket.
raise_udp_buffers >&2

go build -o "$work/ted" ./cmd/ted
ted=$work/ted

# ---- the trees
trees=$work/trees
mkdir -p "$trees"
fetch_tools() { # version -> dir
  local dir
  dir=$(GOFLAGS=-mod=mod go mod download -json "golang.org/x/tools@$1" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$trees/tools-$1"
  cp -r "$dir/." "$trees/tools-$1/"
  chmod -R u+w "$trees/tools-$1"
}
build_gopls() { # version -> dir
  mkdir -p "$trees/gopls-$1"
  GOBIN="$trees/gopls-$1" GOFLAGS=-mod=mod go install "golang.org/x/tools/gopls@$1"
}
gen_trees() { # -> gen-old, gen-new
  local each=$((gen_mib * 1048576 / gen_files)) i
  mkdir -p "$trees/gen-old"
  for ((i = 0; i < gen_files; i++)); do
    mkdir -p "$trees/gen-old/d$((i / 100))"
  done
  # One stream of random bytes, cut into the files.
  head -c $((each * gen_files)) /dev/urandom | split -a 5 -d -b "$each" - "$trees/gen-old/f."
  for ((i = 0; i < gen_files; i++)); do
    printf -v n '%05d' "$i"
    mv "$trees/gen-old/f.$n" "$trees/gen-old/d$((i / 100))/f$n"
  done
  cp -r "$trees/gen-old" "$trees/gen-new"
  # 1 % of the files: a few bytes changed in the middle.
  for ((i = 0; i < gen_files; i += 100)); do
    printf -v n '%05d' "$i"
    printf 'CHANGED' | dd of="$trees/gen-new/d$((i / 100))/f$n" bs=1 seek=$((each / 2)) conv=notrunc status=none
  done
}

# ---- PKI: dist-1 is reached at 127.0.0.2 by the subscriber (the hop
# counted) and at 127.0.0.1 by the publisher (not counted).
(
  cd "$work"
  "$ted" pki init --dir pki >/dev/null
  "$ted" pki issue --dir pki --name dist-1 --role distributor --host 127.0.0.1 --host 127.0.0.2 >/dev/null
  "$ted" pki issue --dir pki --name pub-1 --role publisher >/dev/null
  "$ted" pki issue --dir pki --name web-01 --role subscriber >/dev/null
  "$ted" pki signing-key --out pki/publisher.key >/dev/null
)

run=0
hop_bytes() { # port -> bytes both ways on the counted hop so far
  iptables -nvxL OUTPUT | awk -v p="$1" '$0 ~ "127.0.0.2" && ($0 ~ "dpt:" p "$" || $0 ~ "spt:" p "$") { s += $2 } END { print s + 0 }'
}
wait_log() { # file pattern [timeout-seconds]
  local i
  for ((i = 0; i < ${3:-600} * 10; i++)); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  tail -20 "$1" >&2
  exit 1
}
start() { # dir role -> pid in last_pid (the daemon's log: dir/role.log)
  (cd "$1" && exec "$ted" "$2" run --config "$2.yaml" >>"$2.log" 2>&1) &
  last_pid=$!
  pids+=("$last_pid")
}
stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

ted_pair() { # name old new -> prints the TED line
  local name=$1 old=$2 new=$3 dir=$work/ted-$1 port before after restart took d_pid s_pid i
  run=$((run + 1))
  port=$((17600 + 10 * run))
  mkdir -p "$dir"
  rules+=("-p udp -d 127.0.0.2 --dport $port" "-p udp -s 127.0.0.2 --sport $port")
  iptables -I OUTPUT -p udp -d 127.0.0.2 --dport "$port"
  iptables -I OUTPUT -p udp -s 127.0.0.2 --sport "$port"
  cat >"$dir/distributor.yaml" <<EOF
name: dist-1
listen: 0.0.0.0:$port
data_dir: ./var-dist
tls: {ca: ../pki/ca.crt, cert: ../pki/dist-1.crt, key: ../pki/dist-1.key}
trust: [../pki/publisher.key.pub]
status_listen: 127.0.0.1:$((port + 1))
channels:
  web:
    publishers: [pub-1]
    children: [web-01]
EOF
  cat >"$dir/subscriber.yaml" <<EOF
name: web-01
parents: [127.0.0.2:$port]
data_dir: ./var-web
tls: {ca: ../pki/ca.crt, cert: ../pki/web-01.crt, key: ../pki/web-01.key}
channels: [web]
trust: [../pki/publisher.key.pub]
root: ./root
status_listen: 127.0.0.1:$((port + 2))
min_free_disk: 1MiB
EOF
  publish() { # src version rev
    "$ted" dist build --store "$dir/pub" --name "$name" --from "$1" --version "$2" --channel web \
      --sign-key "$work/pki/publisher.key" --json >/dev/null
    "$ted" publish --store "$dir/pub" "$name@$3" --to "127.0.0.1:$port" --ca "$work/pki/ca.crt" \
      --cert "$work/pki/pub-1.crt" --key "$work/pki/pub-1.key" --json >/dev/null 2>>"$dir/publish.log"
  }
  start "$dir" distributor
  d_pid=$last_pid
  wait_log "$dir/distributor.log" "distributor running" 30
  start "$dir" subscriber
  s_pid=$last_pid
  wait_log "$dir/subscriber.log" "connected to parent" 30
  publish "$old" 1.0.0 1
  wait_log "$dir/subscriber.log" "extracted and verified.* rev=1"
  before=$(hop_bytes "$port")
  publish "$new" 1.0.1 2
  wait_log "$dir/subscriber.log" "extracted and verified.* rev=2"
  sleep 2 # the status reports that follow the extraction are part of the upgrade
  after=$(hop_bytes "$port")
  took=$(grep "extracted and verified.* rev=2" "$dir/subscriber.log" | sed -n 's/.* took=\([^ ]*\).*/\1/p' | tail -1)
  # A restart with nothing new: what the session's set-up costs.
  stop "$s_pid"
  local before_restart
  before_restart=$(hop_bytes "$port")
  local lines
  lines=$(grep -c "connected to parent" "$dir/subscriber.log")
  start "$dir" subscriber
  s_pid=$last_pid
  for ((i = 0; i < 300; i++)); do
    (($(grep -c "connected to parent" "$dir/subscriber.log") > lines)) && break
    sleep 0.1
  done
  sleep 5
  restart=$(($(hop_bytes "$port") - before_restart))
  stop "$s_pid"
  stop "$d_pid"
  ted_upgrade=$((after - before))
  ted_restart=$restart
  ted_took=$took
}

rsync_pair() { # old new -> rsync_bytes
  local dir=$work/rsync-$run port=$((18700 + run)) stats
  mkdir -p "$dir"
  cp -r "$1" "$dir/dest"
  cat >"$dir/rsyncd.conf" <<EOF
port = $port
address = 127.0.0.1
use chroot = false
[dest]
  path = $dir/dest
  read only = false
  uid = root
  gid = root
EOF
  rsync --daemon --no-detach --config "$dir/rsyncd.conf" &
  pids+=($!)
  local rpid=$!
  sleep 0.5
  stats=$(rsync -az --checksum --no-whole-file --delete --stats "$2/" "rsync://127.0.0.1:$port/dest/")
  kill "$rpid" 2>/dev/null || true
  local sent recv
  sent=$(sed -n 's/^Total bytes sent: \([0-9,]*\).*/\1/p' <<<"$stats" | tr -d ,)
  recv=$(sed -n 's/^Total bytes received: \([0-9,]*\).*/\1/p' <<<"$stats" | tr -d ,)
  rsync_bytes=$((sent + recv))
}

delta_pair() { # old new -> zstd_bytes xdelta_bytes
  local dir=$work/delta-$run
  mkdir -p "$dir"
  tar --sort=name -C "$1" -cf "$dir/old.tar" .
  tar --sort=name -C "$2" -cf "$dir/new.tar" .
  # -19 takes minutes a GiB: past 512 MiB, the default level (the long
  # matches, which find the old bytes, are the same).
  local level=-19
  (($(stat -c %s "$dir/new.tar") > 512 << 20)) && level=-3
  zstd -q "$level" --long=31 --patch-from="$dir/old.tar" "$dir/new.tar" -o "$dir/patch.zst" 2>/dev/null
  zstd_bytes=$(stat -c %s "$dir/patch.zst")
  xdelta3 -9 -e -f -s "$dir/old.tar" "$dir/new.tar" "$dir/patch.xd3"
  xdelta_bytes=$(stat -c %s "$dir/patch.xd3")
  rm -f "$dir/old.tar" "$dir/new.tar"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.3f", b / 1e6 }'; }

say "# bench/upgrade.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$ted" version | head -1)"
say "# MB = 10^6 bytes; TED: distributor -> subscriber hop, both ways, IP packets"
printf '%-6s %10s %10s %10s %10s %12s %12s %12s %10s\n' pair files MB-old TED rsync zstd-patch xdelta3 TED/rsync extract | tee -a "$out"
for pair in $pairs; do
  case $pair in
  tools)
    fetch_tools "$tools_old"
    fetch_tools "$tools_new"
    old=$trees/tools-$tools_old new=$trees/tools-$tools_new
    ;;
  gopls)
    build_gopls "$gopls_old"
    build_gopls "$gopls_new"
    old=$trees/gopls-$gopls_old new=$trees/gopls-$gopls_new
    ;;
  gen)
    gen_trees
    old=$trees/gen-old new=$trees/gen-new
    ;;
  *)
    echo "unknown pair $pair" >&2
    exit 2
    ;;
  esac
  ted_pair "$pair" "$old" "$new"
  rsync_pair "$old" "$new"
  delta_pair "$old" "$new"
  printf '%-6s %10d %10s %10s %10s %12s %12s %12s %10s\n' "$pair" "$(find "$new" -type f | wc -l)" \
    "$(mb "$(du -sb "$old" | cut -f1)")" "$(mb "$ted_upgrade")" "$(mb "$rsync_bytes")" "$(mb "$zstd_bytes")" \
    "$(mb "$xdelta_bytes")" "$(awk -v a="$ted_upgrade" -v b="$rsync_bytes" 'BEGIN { printf "%.2f", a / b }')" "$ted_took" | tee -a "$out"
  say "       subscriber restart with nothing new: $(mb "$ted_restart") MB on the hop"
done
