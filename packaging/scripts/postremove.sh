#!/bin/sh
# After removal (deb postrm: remove, purge; rpm %postun: 0). Keeps
# /var/lib/ted (stores and journals), /etc/ted (configs and keys) and the
# ted user: reinstalling picks up where the daemons left off.
set -e
case "$1" in
remove | purge | 0) ;;
*) exit 0 ;;
esac
# Instances enabled with systemctl enable stay enabled after a deb remove,
# as Debian does for every service, and come back with a reinstall. A purge
# (deb) or an erase (rpm) disables them: their unit files are gone. Only
# the links in *.wants/ go; a mask (systemctl mask) is the operator's.
if [ "$1" != remove ]; then
	find /etc/systemd/system -mindepth 2 -maxdepth 2 -type l \( -name 'ted-subscriber@*.service' \
		-o -name 'ted-distributor@*.service' -o -name 'ted-publisher@*.service' \) \
		-delete 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
