# Sourced by the bench scripts: the set-up they share.

# raise_udp_buffers raises net.core.rmem_max and wmem_max to the 7 MiB
# quic-go asks for on each socket (as root), saying on stdout what it did
# or why it could not: QUIC still runs with smaller buffers, slower.
raise_udp_buffers() {
  local want=7500000 k cur
  for k in net.core.rmem_max net.core.wmem_max; do
    cur=$(sysctl -n "$k")
    if ((cur < want)); then
      if [[ $(id -u) == 0 ]] && sysctl -qw "$k=$want" 2>/dev/null; then
        echo "raised $k from $cur to $want"
      else
        echo "WARNING: could not raise $k (is $cur, want $want; as root: sysctl -w $k=$want): QUIC runs with small UDP buffers"
      fi
    fi
  done
}

# bench_work sets work to $WORK, kept at the end (keep=1), or to a new
# temporary directory, removed at the end (keep=0).
bench_work() {
  if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
    keep=1
  else
    work=$(mktemp -d)
    keep=0
  fi
}
