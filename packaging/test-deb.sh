#!/bin/bash
# Install the built package on THIS machine, check what it installed, purge it,
# check what the purge removed and what it kept. For CI machines (run as root);
# it refuses to run where backupmand is installed or has left data.
#
#   packaging/test-deb.sh [DEB]        (default: the newest dist/backupmand_*.deb)
#
# (otherwise `backupmand version` and `check-config` are reported as not run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
NAME=backupmand
STATE_DIR=/var/lib/backupmand
BACKUP_DIR=/var/backups/backupmand
CONF_DIR=/etc/backupmand
PREFIX=/opt/backupmand
UNIT=/lib/systemd/system/backupmand.service
SHARE=/usr/share/backupmand

fail() {
    echo "test-deb: FAIL: $*" >&2
    exit 1
}

ok() {
    echo "test-deb: ok: $*"
}

deb=${1:-}
if [ -z "$deb" ]; then
    deb=$(find "$root/dist" -maxdepth 1 -name 'backupmand_*.deb' -printf '%T@ %p\n' 2>/dev/null |
        sort -n | tail -1 | cut -d' ' -f2-)
fi
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    fail "no package: build one with packaging/build-deb.sh"
fi
[ "$(id -u)" = 0 ] || fail "run as root: this installs and purges a package"

# --- preconditions: never touch a real installation or an operator's data

status=$(dpkg-query -W -f='${Status}' "$NAME" 2>/dev/null || true)
case "$status" in
    ""|"unknown ok not-installed"|"deinstall ok not-installed"|"purge ok not-installed") ;;
    *) fail "$NAME is known to dpkg here ($status): refusing to touch it" ;;
esac
for dir in "$STATE_DIR" "$BACKUP_DIR"; do
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        fail "$dir holds data: refusing to run here"
    fi
done
if getent passwd "$NAME" >/dev/null || getent group "$NAME" >/dev/null; then
    fail "a $NAME user or group already exists: refusing to run here"
fi

marker="$BACKUP_DIR/test-deb-$$.sql.zst"

# Whatever happens, leave the machine as found: everything below was created by
# this script (the preconditions guarantee it).
cleanup() {
    code=$?
    if dpkg-query -W -f='${Status}' "$NAME" 2>/dev/null | grep -q "ok installed\|config-files"; then
        dpkg --purge "$NAME" >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE_DIR" "$BACKUP_DIR" "$CONF_DIR" "$PREFIX"
    getent passwd "$NAME" >/dev/null && userdel "$NAME" >/dev/null 2>&1
    getent group "$NAME" >/dev/null && groupdel "$NAME" >/dev/null 2>&1
    if [ "$code" = 0 ]; then
        echo "test-deb: PASS"
    fi
    exit "$code"
}
trap cleanup EXIT

owner_mode() {
    stat -c '%U:%G %a' "$1"
}

expect_owner_mode() {
    actual=$(owner_mode "$1")
    [ "$actual" = "$2" ] || fail "$1 is $actual, expected $2"
    ok "$1 is $2"
}

install_package() {
    dpkg -i "$deb" || fail "dpkg -i $deb (missing dependencies? apt-get install -f)"
    dpkg-query -W -f='${Status}' "$NAME" | grep -q "ok installed" || fail "not installed"
}

# Python checks run the installed program: -I (isolated mode) keeps the current
# folder (maybe a source tree) and PYTHON* variables out of sys.path.
cd /

# --- 1. install

echo "test-deb: installing $deb"
install_package
ok "installed $(dpkg-query -W -f='${Version} ${Architecture}' "$NAME")"

dpkg --verify "$NAME" || fail "dpkg --verify: installed files differ from the package"
ok "dpkg --verify"

[ "$(readlink /usr/bin/backupmand)" = "$PREFIX/bin/backupmand" ] || fail "/usr/bin/backupmand"
[ -x /usr/bin/backupmand ] || fail "/usr/bin/backupmand is not executable"
[ "$(head -1 "$PREFIX/bin/backupmand")" = "#!$PREFIX/bin/python" ] ||
    fail "$PREFIX/bin/backupmand starts with $(head -1 "$PREFIX/bin/backupmand")"
ok "/usr/bin/backupmand -> $PREFIX/bin/backupmand"

IFS=: read -r _ _ uid _ _ home shell < <(getent passwd "$NAME") || fail "no $NAME user"
[ "$home" = "$STATE_DIR" ] || fail "$NAME's home is $home"
case "$shell" in */nologin|/bin/false) ;; *) fail "$NAME's shell is $shell" ;; esac
[ "$uid" -lt 1000 ] || fail "$NAME is not a system user (uid $uid)"
ok "system user $NAME (uid $uid, home $home, shell $shell)"

expect_owner_mode "$STATE_DIR" "$NAME:$NAME 750"
expect_owner_mode "$BACKUP_DIR" "$NAME:$NAME 750"
expect_owner_mode "$CONF_DIR" "root:$NAME 750"
expect_owner_mode "$CONF_DIR/config.yml" "root:$NAME 640"
[ -f "$UNIT" ] || fail "$UNIT is missing"
if command -v systemd-analyze >/dev/null; then
    # The installed unit, with the installed /usr/bin/backupmand: no rewriting needed.
    errors=$(systemd-analyze verify "$UNIT" 2>&1) || fail "systemd-analyze verify: $errors"
    [ -z "$errors" ] || fail "systemd-analyze verify: $errors"
    ok "systemd-analyze verify $UNIT"
fi

# The service user can read and validate the installed config.
runuser -u "$NAME" -- "$PREFIX/bin/python" -I -c "
from backupmand.config import load_settings
settings = load_settings('$CONF_DIR/config.yml')
print('test-deb: ok: config valid for $NAME:', [s.label for s in settings.data_sources],
      [d.label for d in settings.drives])
" || fail "the installed config does not load as $NAME"

"$PREFIX/bin/python" -I -c "
import backupmand
assert backupmand.__file__.startswith('$PREFIX/'), backupmand.__file__
from backupmand.version import build_info
info = build_info()
assert info['CommitSHA'] not in ('', 'unknown') and info['BuildDate'] != 'unknown', info
print('test-deb: ok: build info', info)
" || fail "build info"

# The packaged interpreter and libraries run without writable+executable memory
# (MemoryDenyWriteExecute=yes in the unit), checked with the kernel's PR_SET_MDWE.
"$PREFIX/bin/python" -I -c "
import ctypes
assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0, 'prctl(PR_SET_MDWE) failed'
import aiohttp, aiosqlite, aioboto3, aiogoogle, pydantic, structlog, yaml, zstandard
import backupmand.config, backupmand.catalog, backupmand.systemd, backupmand.journald
import apprise, backupmand.notifiers.apprise
zstandard.ZstdCompressor(threads=2).compress(b'x' * 100000)
ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)()
" || fail "the installed program needs writable+executable memory"
ok "imports under PR_SET_MDWE (MemoryDenyWriteExecute)"

# The installed CLI answers, and reads the packaged config as the service user.
version_output=$(backupmand version) || fail "backupmand version"
expected=$(dpkg-query -W -f='${Version}' "$NAME")
case "$version_output" in *"${expected%%~*}"*) ;; *) fail "backupmand version: $version_output" ;; esac
ok "backupmand version: $(echo "$version_output" | head -1)"
runuser -u "$NAME" -- backupmand check-config >/dev/null ||
    fail "backupmand check-config (as $NAME, default config path)"
ok "backupmand check-config as $NAME"

# The monitoring files: rules that promtool accepts and whose unit tests pass where
# they are installed, and a dashboard that is JSON.
for file in prometheus/backupmand-rules.yml prometheus/backupmand-rules.test.yml \
        grafana/backupmand.json; do
    expect_owner_mode "$SHARE/$file" "root:root 644"
done
if command -v promtool >/dev/null; then
    (cd "$SHARE/prometheus" && promtool check rules backupmand-rules.yml >/dev/null &&
        promtool test rules backupmand-rules.test.yml >/dev/null) ||
        fail "promtool check/test rules in $SHARE/prometheus"
    ok "promtool check rules and test rules in $SHARE/prometheus"
fi
"$PREFIX/bin/python" -I -c "
import json
dashboard = json.load(open('$SHARE/grafana/backupmand.json', encoding='utf-8'))
assert dashboard['uid'] == 'backupmand' and dashboard['panels'], 'not the dashboard'
" || fail "$SHARE/grafana/backupmand.json is not the dashboard"
ok "$SHARE/grafana/backupmand.json is the dashboard"

# An operator's backup, to be kept by the purge.
runuser -u "$NAME" -- sh -c "echo backup > '$marker'"

# --- 2. purge with data: configuration and program gone, data and user kept

echo "test-deb: purging (with a backup in $BACKUP_DIR)"
dpkg --purge "$NAME" || fail "dpkg --purge"
dpkg-query -W -f='${Status}' "$NAME" 2>/dev/null | grep -q "ok installed\|config-files" &&
    fail "still known to dpkg after purge"
for gone in "$PREFIX" /usr/bin/backupmand "$UNIT" "$CONF_DIR" "$SHARE"; do
    if [ -e "$gone" ] || [ -L "$gone" ]; then
        fail "$gone is still there after purge"
    fi
done
ok "program, unit, monitoring files and configuration removed"
[ -f "$marker" ] || fail "the purge deleted a backup: $marker"
getent passwd "$NAME" >/dev/null || fail "the purge removed $NAME, who still owns $BACKUP_DIR"
ok "backups and their owner $NAME kept"

# --- 3. reinstall over the kept data, then purge without data: nothing left

rm -f "$marker"
# What the first installation's checks may have written (e.g. a catalog).
find "$STATE_DIR" -mindepth 1 -delete 2>/dev/null || true
echo "test-deb: reinstalling over the kept user and directories"
install_package
expect_owner_mode "$BACKUP_DIR" "$NAME:$NAME 750"
expect_owner_mode "$CONF_DIR/config.yml" "root:$NAME 640"
# An upgrade (here: the same version again) keeps the operator's config changes.
echo "# changed by the operator" >>"$CONF_DIR/config.yml"
echo "test-deb: installing again (the upgrade path: prerm upgrade, postinst configure)"
install_package
grep -q "^# changed by the operator" "$CONF_DIR/config.yml" || fail "the upgrade replaced the config"
expect_owner_mode "$CONF_DIR/config.yml" "root:$NAME 640"
ok "upgrade kept the changed conffile"
dpkg --purge "$NAME" || fail "second dpkg --purge"
for gone in "$PREFIX" "$CONF_DIR" "$STATE_DIR" "$BACKUP_DIR"; do
    [ ! -e "$gone" ] || fail "$gone is still there after purging an empty installation"
done
getent passwd "$NAME" >/dev/null && fail "user $NAME still exists after purging without data"
getent group "$NAME" >/dev/null && fail "group $NAME still exists after purging without data"
ok "purge without data removed the directories, user and group"
