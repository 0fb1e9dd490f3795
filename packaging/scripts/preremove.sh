#!/bin/sh
# Before removal (deb prerm: remove; rpm %preun: 0). On an upgrade
# (deb: upgrade, rpm: 1) the daemons keep running.
set -e
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl stop 'ted-subscriber@*.service' 'ted-distributor@*.service' \
		'ted-publisher@*.service' >/dev/null 2>&1 || true
fi
exit 0
