#!/bin/bash
# Build dist/backupmand_<version>_<arch>.deb from this tree with dpkg-deb alone
# (no debhelper).
#
#   packaging/build-deb.sh [-o OUTDIR] [-p PYTHON]
#
# The package holds:
#   /opt/backupmand/                    the program in its own virtual environment
#   /usr/bin/backupmand                 -> /opt/backupmand/bin/backupmand
#   /lib/systemd/system/backupmand.service
#   /etc/backupmand/config.yml          a conffile, root:backupmand 0640
#   /usr/share/doc/backupmand/          copyright (and README.md when the tree has one)
#   /usr/share/backupmand/prometheus/   alert rules and their promtool unit tests
#   /usr/share/backupmand/grafana/      a Grafana dashboard
# and maintainer scripts (packaging/debian/) that create the backupmand system user
# and its directories.
#
# The virtual environment is made with the Debian interpreter (/usr/bin/python3,
# resolved to its versioned name, e.g. /usr/bin/python3.11): a venv points at the
# interpreter it was made with, so the package depends on exactly that one
# (python3.11) and works on Debian hosts that have it. pip installs the project and
# its dependencies from PyPI (network needed; pip's cache makes rebuilds fast), at the
# versions pinned in constraints.txt (packaging/lock.sh), so that a package built today
# and one built next month hold the same libraries.
# Compiled wheels make the package architecture-specific.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
out="$root/dist"
python=/usr/bin/python3
prefix=/opt/backupmand
maintainer=${BACKUPMAND_DEB_MAINTAINER:-backupmand maintainers <backupmand@localhost>}

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while getopts "o:p:h" option; do
    case "$option" in
        o) out=$OPTARG ;;
        p) python=$OPTARG ;;
        h) usage 0 ;;
        *) usage 2 ;;
    esac
done

die() {
    echo "build-deb: $*" >&2
    exit 1
}

log() {
    echo "build-deb: $*" >&2
}

for tool in dpkg-deb dpkg install md5sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install dpkg-dev)"
done
[ -x "$python" ] || die "$python is missing (apt-get install python3)"

# The versioned interpreter behind /usr/bin/python3: what the venv will point at.
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
interpreter=/usr/bin/python$pyver
[ -x "$interpreter" ] || die "$interpreter is missing"
if ! "$interpreter" -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian splits venv/ensurepip into pythonX.Y-venv.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing python$pyver-venv (venv and ensurepip for $interpreter)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$pyver-venv" >&2
    else
        die "$interpreter cannot make a virtual environment: apt-get install python$pyver-venv"
    fi
fi

# Version: pyproject.toml's, in Debian's spelling (1.2.0rc1 -> 1.2.0~rc1).
version=$("$interpreter" - "$root/pyproject.toml" <<'PY'
import re, sys, tomllib
with open(sys.argv[1], "rb") as handle:
    version = tomllib.load(handle)["project"]["version"]
version = re.sub(r"\.?(a|b|rc|dev)(\d*)", r"~\1\2", version)
version = version.replace(".post", "+post")
print(version)
PY
)
[ -n "$version" ] || die "no version in pyproject.toml"
arch=$(dpkg --print-architecture)

commit=unknown
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git -C "$root" rev-parse --short HEAD)
    if ! git -C "$root" diff --quiet HEAD -- 2>/dev/null; then
        commit="$commit-dirty"
    fi
fi
build_date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ)

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/backupmand-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/root"
venv="$stage$prefix"

# 1. A clean copy of what the project's build needs, plus its build stamp.
src="$work/src"
mkdir -p "$src"
for item in pyproject.toml setup.cfg setup.py MANIFEST.in README.md README.rst LICENSE LICENSE.txt; do
    if [ -e "$root/$item" ]; then
        cp -a "$root/$item" "$src/"
    fi
done
cp -a "$root/backupmand" "$src/"
find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -f "$src/backupmand/_build.py"
cat >"$src/backupmand/_build.py" <<EOF
"""Written by packaging/build-deb.sh: what \`backupmand version\` reports."""

COMMIT_SHA = "$commit"
BUILD_DATE = "$build_date"
EOF

# 2. The virtual environment, made in the staging tree.
log "backupmand $version ($commit) for $arch, python$pyver"
"$interpreter" -m venv "$venv"
log "installing the project and its dependencies (pip)"
[ -f "$root/constraints.txt" ] || die "constraints.txt is missing (packaging/lock.sh writes it)"
"$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    --no-compile --constraint "$root/constraints.txt" "$src"

# 3. Relocate it to /opt/backupmand: scripts' #! lines, activate scripts and
#    pyvenv.cfg name the staging path. pip's direct_url.json names the source copy.
{ grep -rlIZ --exclude-dir=__pycache__ -F "$venv" "$venv" || true; } |
    xargs -0 -r sed -i "s#$venv#$prefix#g"
for record in "$venv"/lib/python*/site-packages/backupmand-*.dist-info; do
    rm -f "$record/direct_url.json"
    sed -i '/direct_url\.json/d' "$record/RECORD"
done
# Byte code compiled for the final paths (tracebacks name /opt/backupmand/...),
# shipped so that Python never writes to /opt at run time (read-only for the
# service under ProtectSystem=strict).
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null ||
    log "note: some files were not byte-compiled (compileall reported errors)"
leaks=$(grep -rlI -F "$work" "$stage" || true)
if [ -n "$leaks" ]; then
    die "the staging path is still named in: $(echo "$leaks" | head -5)"
fi

# 4. The rest of the files.
install -D -m 0644 "$root/systemd/backupmand.service" "$stage/lib/systemd/system/backupmand.service"
install -d -m 0755 "$stage/usr/bin"
ln -s "$prefix/bin/backupmand" "$stage/usr/bin/backupmand"
install -d -m 0750 "$stage/etc/backupmand"
# The packaged default runs with nothing but the host (its SQLite catalog, a local
# drive); config/backupmand.example.yml goes to the docs as the reference of every key.
install -m 0640 "$here/config.yml" "$stage/etc/backupmand/config.yml"
install -D -m 0644 "$root/config/backupmand.example.yml" \
    "$stage/usr/share/doc/backupmand/examples/backupmand.example.yml"
install -D -m 0644 "$here/debian/copyright" "$stage/usr/share/doc/backupmand/copyright"
if [ -f "$root/README.md" ]; then
    install -m 0644 "$root/README.md" "$stage/usr/share/doc/backupmand/README.md"
fi
# Monitoring, for the Prometheus and Grafana hosts to copy or point at: alert rules
# (with their promtool unit tests, which find the rules beside them) and a dashboard.
for file in prometheus/backupmand-rules.yml prometheus/backupmand-rules.test.yml \
        grafana/backupmand.json; do
    install -D -m 0644 "$here/$file" "$stage/usr/share/backupmand/$file"
done

# 5. Control files.
install -d -m 0755 "$stage/DEBIAN"
installed_size=$(du -sk --apparent-size "$stage" | cut -f1)
sed -e "s#@VERSION@#$version#g" -e "s#@ARCH@#$arch#g" -e "s#@PYVER@#$pyver#g" \
    -e "s#@INSTALLED_SIZE@#$installed_size#g" -e "s#@MAINTAINER@#$maintainer#g" \
    "$here/debian/control" >"$stage/DEBIAN/control"
install -m 0644 "$here/debian/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/debian/$script" "$stage/DEBIAN/$script"
done
# Checksums for `dpkg --verify` (conffiles are tracked by dpkg itself).
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

# 6. The package.
mkdir -p "$out"
deb="$out/backupmand_${version}_${arch}.deb"
# zstd: a second instead of xz's minute and a half for ~140 MB, 25% larger. dpkg
# reads zstd members since Debian 12, the oldest release with the python3.11 we
# depend on. BACKUPMAND_DEB_COMPRESSION=xz for the smallest file.
dpkg-deb --root-owner-group "-Z${BACKUPMAND_DEB_COMPRESSION:-zstd}" --build "$stage" "$deb" >/dev/null
log "built $deb"
echo "$deb"
