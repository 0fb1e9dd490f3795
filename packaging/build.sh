#!/usr/bin/env bash
# Builds the ted packages: dist/ted_VERSION_ARCH.deb and
# dist/ted-VERSION-1.ARCH.rpm, for this machine's GOARCH or GOARCH=...
# (linux only). Needs git and Go; works from a clean clone and can be run
# again (it replaces what it made before for the same architecture).
#
#   packaging/build.sh                  # this machine's architecture
#   GOARCH=arm64 packaging/build.sh     # another one
#
# The version is `git describe --tags --always --dirty` (TED_VERSION=...
# overrides it); every file's time is the commit's (SOURCE_DATE_EPOCH), so
# one commit always makes the same packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# nfpm, pinned: the proxy serves it, and a newer release may want a newer Go.
nfpm_module=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

die() {
	echo "build.sh: $*" >&2
	exit 1
}

command -v git >/dev/null || die "git is needed (the version comes from git describe)"
command -v go >/dev/null || die "go is needed"
git rev-parse --git-dir >/dev/null 2>&1 || die "not a git checkout: run it from a clone (or set TED_VERSION and SOURCE_DATE_EPOCH)"

host_os=$(go env GOHOSTOS)
host_arch=$(go env GOHOSTARCH)
arch=${GOARCH:-$(go env GOARCH)}
# Go and everything run here (nfpm, ted gendocs) build for this machine;
# only the packaged binary is cross-compiled.
unset GOARCH GOOS

# The version the binary reports, and the one the packages carry. A
# package version must start with a digit and sort after the version it
# follows in both dpkg and rpm: v1.2.0 -> 1.2.0; v1.2.0-3-gabc1234 (three
# commits later) -> 1.2.0+3.gabc1234; v1.3.0-rc.1 -> 1.3.0~rc.1 (before
# 1.3.0); no tag at all -> 0.0.0+N.gHASH, N commits in; -dirty -> +...dirty.
version=${TED_VERSION:-$(git describe --tags --always --dirty)}
package_version() {
	local v=${1#v} meta="" pre="" dirty=""
	if [[ $v == *-dirty ]]; then
		dirty=dirty
		v=${v%-dirty}
	fi
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		v=${BASH_REMATCH[1]}
		meta="${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	fi
	if [[ -z ${TED_VERSION:-} ]] && ! git describe --tags >/dev/null 2>&1; then
		# No tag: describe printed the commit's hash.
		meta="$(git rev-list --count HEAD).g$v"
		v=0.0.0
	elif [[ $v =~ ^([0-9]+(\.[0-9]+)*)(-(.+))?$ ]]; then
		v=${BASH_REMATCH[1]}
		pre=${BASH_REMATCH[4]}
	else
		die "version $1: want a tag like v1.2.3 (or TED_VERSION=1.2.3)"
	fi
	pre=${pre//-/.}
	meta+=${dirty:+${meta:+.}$dirty}
	echo "$v${pre:+~$pre}${meta:++$meta}"
}
pkg_version=$(package_version "$version")

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH

echo "== ted $version (package $pkg_version), linux/$arch"
stage=dist/stage
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/completions"

CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
	-ldflags "-s -w -X main.version=$version" -o "$stage/ted" ./cmd/ted

# Man pages and completions come from the commands themselves: from the
# packaged binary when it runs here, else from one built for this machine.
ted=$stage/ted
if [[ $host_os != linux || $host_arch != "$arch" ]]; then
	ted=dist/host/ted
	CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$version" -o "$ted" ./cmd/ted
fi
"$ted" gendocs --man "$stage/man"
gzip -9 -n "$stage"/man/*.1
"$ted" completion bash >"$stage/completions/ted.bash"
"$ted" completion zsh >"$stage/completions/_ted"
"$ted" completion fish >"$stage/completions/ted.fish"

# nfpm writes its conventionally named packages to a fresh directory; each
# then replaces any earlier one of the same architecture in dist/.
out=dist/.nfpm
rm -rf "$out"
mkdir -p "$out"
nfpm_arch=$arch
if [[ $arch == arm ]]; then
	nfpm_arch=arm$(go env GOARM) # arm7 is armhf, arm5 armel
fi
for packager in deb rpm; do
	TED_ARCH=$nfpm_arch TED_PKG_VERSION=$pkg_version \
		go run "$nfpm_module" package --config packaging/nfpm.yaml \
		--packager "$packager" --target "$out/" >/dev/null
done
shopt -s nullglob
for f in "$out"/*.deb; do
	rm -f dist/ted_*_"${f##*_}" # ted_VERSION_ARCH.deb
	mv "$f" dist/
	echo "dist/${f##*/}"
done
for f in "$out"/*.rpm; do
	a=${f%.rpm}
	rm -f dist/ted-*."${a##*.}".rpm # ted-VERSION-RELEASE.ARCH.rpm
	mv "$f" dist/
	echo "dist/${f##*/}"
done
rmdir "$out"
