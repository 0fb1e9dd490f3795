#!/bin/sh
# After install and upgrade (deb postinst: configure; rpm %post). Every step
# is idempotent, and none needs systemd to be running (a container, a
# chroot, an image build).
set -e

# The system user the distributor and publisher run as.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/ted.conf >/dev/null 2>&1 || true
fi
if ! getent passwd ted >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	getent group ted >/dev/null 2>&1 || groupadd --system ted
	useradd --system --gid ted --home-dir /var/lib/ted --no-create-home \
		--shell "$nologin" --comment "TED distributor and publisher" ted
fi

# The state directory; each daemon instance has its own inside it.
if ! { command -v systemd-tmpfiles >/dev/null 2>&1 &&
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/ted.conf >/dev/null 2>&1; }; then
	install -d -m 0755 /var/lib/ted
fi

# The UDP buffer limits of /usr/lib/sysctl.d/60-ted.conf, now rather than
# at the next boot. Only raised: a host that set larger ones keeps them.
for key in net.core.rmem_max net.core.wmem_max; do
	cur=$(sysctl -n "$key" 2>/dev/null) || continue
	if [ "$cur" -lt 7340032 ] 2>/dev/null; then
		sysctl -q -w "$key=7340032" >/dev/null 2>&1 || true
	fi
done

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# An upgrade does not restart running daemons: a subscriber may be the
	# one installing this package, from an action it runs. Say so instead.
	running=$(systemctl list-units --state=active --plain --no-legend \
		'ted-subscriber@*.service' 'ted-distributor@*.service' 'ted-publisher@*.service' \
		2>/dev/null | awk '{print $1}' | tr '\n' ' ') || running=
	if [ -n "$running" ]; then
		echo "ted: running daemons still use the old binary; restart them when convenient:"
		echo "  systemctl restart $running"
	fi
fi
exit 0
