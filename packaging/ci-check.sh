#!/usr/bin/env bash
# Checks the .deb the way an operator meets it: builds it (build.sh),
# installs it with dpkg, runs what it installed, verifies the systemd units,
# runs a distributor as the ted user the way its unit does, then purges the
# package. Debian, as root; installs the tools it needs. It leaves the
# machine as it found it, but for the packages it installed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
	echo "ci-check: FAIL: $*" >&2
	exit 1
}
step() { echo "== package: $*"; }

[[ $(id -u) == 0 ]] || fail "run as root: it installs and removes the ted package"
command -v dpkg >/dev/null || fail "dpkg not found: this check is for Debian"

# What systemd-analyze verify and the checks below use: systemd-analyze
# (systemd), man (man-db), kill and sysctl (procps, the units' ExecReload).
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v man >/dev/null || missing+=(man-db)
{ [[ -x /bin/kill ]] && command -v sysctl >/dev/null; } || missing+=(procps)
if ((${#missing[@]})); then
	step "apt-get install ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Refuse to clobber a ted that did not come from a package; a ted package
# left by an earlier run is replaced and purged like any other.
if [[ -e /usr/bin/ted ]] && ! dpkg -S /usr/bin/ted >/dev/null 2>&1; then
	fail "/usr/bin/ted exists and belongs to no package; move it away first"
fi
had_user=$(getent passwd ted >/dev/null && echo yes || echo no)
had_state=$([[ -e /var/lib/ted ]] && echo yes || echo no)

step "build"
if ! built=$(packaging/build.sh); then
	echo "$built"
	fail "packaging/build.sh failed"
fi
echo "$built"
deb=$(grep '\.deb$' <<<"$built" | head -n1)
[[ -n $deb && -f $deb ]] || fail "build.sh made no .deb"
grep -q '\.rpm$' <<<"$built" || fail "build.sh made no .rpm"
version=$(dpkg-deb -f "$deb" Version)
# build.sh's first line: "== ted VERSION (package ...)", VERSION from git describe.
ted_version=$(sed -n '1s/^== ted \([^ ]*\) .*/\1/p' <<<"$built")
ls -l dist/ted[_-]*

# Leave the machine as it was, pass or fail: no ted package, and the user
# and state directory the package keeps on purpose only if they were there.
tmp=""
cleanup() {
	[[ -n $tmp ]] && rm -rf "$tmp" /var/lib/ted/ci-check
	if dpkg -s ted >/dev/null 2>&1; then
		echo "ci-check: purging the ted package it installed" >&2
		dpkg -P ted >/dev/null 2>&1 || true
	fi
	[[ $had_state == yes ]] || rm -rf /var/lib/ted
	if [[ $had_user == no ]] && getent passwd ted >/dev/null; then
		userdel ted || true
	fi
}
trap cleanup EXIT

step "dpkg -i $deb"
dpkg -i "$deb" >/dev/null || fail "dpkg -i $deb failed"
[[ $(dpkg-query -W -f '${Status}' ted) == "install ok installed" ]] || fail "ted is not 'install ok installed' after dpkg -i"

step "installed files"
[[ -x /usr/bin/ted ]] || fail "/usr/bin/ted is missing or not executable"
out=$(ted version) || fail "ted version exited $?"
echo "$out"
# The binary says git describe's version; the package, the same made sortable.
[[ $out == "ted $ted_version "* ]] || fail "ted version printed '$out', want 'ted $ted_version (...)'"
if ted --help | grep -q -- '--version'; then
	out=$(ted --version) || fail "ted --version exited $?"
	[[ $out == "ted $ted_version "* ]] || fail "ted --version printed '$out', want 'ted $ted_version (...)'"
	echo "ted --version: ok"
fi
for f in \
	/usr/lib/systemd/system/ted-subscriber@.service \
	/usr/lib/systemd/system/ted-distributor@.service \
	/usr/lib/systemd/system/ted-publisher@.service \
	/usr/lib/sysusers.d/ted.conf \
	/usr/lib/tmpfiles.d/ted.conf \
	/usr/lib/sysctl.d/60-ted.conf \
	/usr/share/bash-completion/completions/ted \
	/usr/share/zsh/vendor-completions/_ted \
	/usr/share/fish/vendor_completions.d/ted.fish \
	/usr/share/doc/ted/LICENSE \
	/usr/share/doc/ted/README.md; do
	[[ -s $f ]] || fail "$f is missing or empty"
done
[[ -d /etc/ted ]] || fail "/etc/ted was not made"
# A dpkg configured to leave out man pages (path-exclude, as slim images
# do) installs none: then the package must at least list them.
dpkg -L ted | grep -qx /usr/share/man/man1/ted.1.gz || fail "the package has no /usr/share/man/man1/ted.1.gz"
if [[ -e /usr/share/man/man1/ted.1.gz ]]; then
	page=$(man -w ted) || fail "man -w ted found no page"
	[[ $page == /usr/share/man/man1/ted.1.gz ]] || fail "man -w ted: $page, want /usr/share/man/man1/ted.1.gz"
	man -w ted-subscriber-run >/dev/null || fail "man -w ted-subscriber-run found no page"
else
	echo "note: this dpkg leaves out man pages; only checked that the package lists them"
fi
bash -n /usr/share/bash-completion/completions/ted || fail "the bash completion does not parse"

step "postinstall: user ted, /var/lib/ted"
getent passwd ted >/dev/null || fail "postinstall made no user ted"
# root's: each instance's own directory in it belongs to its user.
[[ $(stat -c %U:%G:%a /var/lib/ted) == root:root:755 ]] || fail "/var/lib/ted is $(stat -c %U:%G:%a /var/lib/ted), want root:root:755"

step "systemd-analyze verify"
for unit in ted-subscriber@ci ted-distributor@ci ted-publisher@ci; do
	# Warnings (an unknown key, a missing man page) exit 0: any output fails.
	if ! out=$(systemd-analyze verify "$unit.service" 2>&1) || [[ -n $out ]]; then
		echo "$out" >&2
		fail "systemd-analyze verify $unit.service"
	fi
	echo "$unit.service: ok"
done

# The units' promises, run by hand (systemd need not run here): the ted
# user can run a distributor from a config in /etc/ted with its data in
# the directory its unit makes (StateDirectory=ted/%i); SIGTERM is a clean
# stop (exit 0, which Restart=on-failure leaves stopped); a bad config
# exits 2 (RestartPreventExitStatus=2).
step "a distributor as user ted"
tmp=$(mktemp -d /etc/ted/ci-check.XXXXXX)
install -d -m 0700 -o ted -g ted /var/lib/ted/ci-check
ted pki init --dir "$tmp/pki" >/dev/null
ted pki issue --dir "$tmp/pki" --name ci-dist --role distributor >/dev/null
ted pki signing-key --out "$tmp/pki/publisher.key" >/dev/null
# As install.md says: the config and certificates readable by group ted,
# the private key owned by ted, mode 0600.
chgrp -R ted "$tmp"
chmod -R g+rX "$tmp"
chown ted "$tmp/pki/ci-dist.key"
chmod 0600 "$tmp/pki/ci-dist.key"
cat >"$tmp/ci.yaml" <<'EOF'
name: ci-dist
listen: 127.0.0.1:0
data_dir: /var/lib/ted/ci-check
tls: {ca: pki/ca.crt, cert: pki/ci-dist.crt, key: pki/ci-dist.key}
trust: [pki/publisher.key.pub]
channels:
  web:
    publishers: [pub-1]
EOF
chgrp ted "$tmp/ci.yaml"
chmod 0640 "$tmp/ci.yaml"
setpriv --reuid=ted --regid=ted --init-groups ted distributor run --config "$tmp/ci.yaml" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	[[ -S /var/lib/ted/ci-check/admin.sock ]] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if ! [[ -S /var/lib/ted/ci-check/admin.sock ]]; then
	kill "$pid" 2>/dev/null || true
	cat "$tmp/log" >&2
	fail "the distributor (user ted) did not come up within 10 s"
fi
ted distributor status --config "$tmp/ci.yaml" >/dev/null || fail "ted distributor status exited $?"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
((rc == 0)) || {
	cat "$tmp/log" >&2
	fail "the distributor exited $rc on SIGTERM, want 0"
}
[[ $(stat -c %U /var/lib/ted/ci-check/store) == ted ]] || fail "the distributor's store is not owned by ted"
echo "name: ci-dist" >"$tmp/bad.yaml"
rc=0
ted distributor run --config "$tmp/bad.yaml" 2>/dev/null || rc=$?
((rc == 2)) || fail "a bad config exited $rc, want 2"
echo "runs as ted; SIGTERM exits 0; a bad config exits 2"
rm -rf "$tmp" /var/lib/ted/ci-check
tmp=""

step "dpkg -P ted"
dpkg -P ted >/dev/null || fail "dpkg -P ted failed"
[[ ! -e /usr/bin/ted ]] || fail "/usr/bin/ted is still there after dpkg -P ted"
[[ ! -e /usr/lib/systemd/system/ted-subscriber@.service ]] || fail "the units are still there after dpkg -P ted"
if dpkg -s ted >/dev/null 2>&1; then fail "dpkg still knows ted after dpkg -P"; fi
[[ -d /var/lib/ted ]] || fail "dpkg -P ted deleted /var/lib/ted: the data must stay"
getent passwd ted >/dev/null || fail "dpkg -P ted deleted the user ted: its files would lose their owner"
echo "ci-check: ok (ted $version)"
