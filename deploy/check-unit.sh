#!/usr/bin/env bash
# Verify deploy/portcullis.service with `systemd-analyze verify`.
#
#   bash deploy/check-unit.sh            # exit 0: the unit is clean
#
# The unit names /usr/local/bin/portcullis, which need not exist on the
# machine that runs this check, and `verify` rejects an ExecStart= whose
# binary is missing. So the check verifies a copy of the unit in a temporary
# directory, with the binary's path pointed at a stand-in executable (the real
# binary when PORTCULLIS_BIN names one, else a tiny stub). Any line that
# systemd-analyze prints about the unit counts as a failure, not only its exit
# status. With CHECK_UNIT_SECURITY=1 it also prints
# `systemd-analyze security --offline=yes` for the unit (informational).
#
# Exit status: 0 clean; 1 verification complained; 77 systemd-analyze is
# missing (install the `systemd` package).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT=$HERE/portcullis.service

if ! command -v systemd-analyze >/dev/null; then
    echo "check-unit: systemd-analyze not found (apt-get install systemd)" >&2
    exit 77
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

BIN=${PORTCULLIS_BIN:-}
if [[ -z $BIN || ! -x $BIN ]]; then
    BIN=$TMP/portcullis
    printf '#!/bin/sh\nexit 0\n' >"$BIN"
    chmod 0755 "$BIN"
fi

grep -q '^ExecStart=/usr/local/bin/portcullis serve --config /etc/portcullis/portcullis.toml$' "$UNIT" || {
    echo "check-unit: ExecStart is not '/usr/local/bin/portcullis serve --config /etc/portcullis/portcullis.toml'" >&2
    exit 1
}

sed "s#/usr/local/bin/portcullis#$BIN#g" "$UNIT" >"$TMP/portcullis.service"

rc=0
out=$(cd "$TMP" && systemd-analyze verify --man=no "$TMP/portcullis.service" 2>&1) || rc=$?
# Lines about other units on the host (a broken unit elsewhere) are not ours.
ours=$(printf '%s\n' "$out" | grep -i 'portcullis' || true)
if [[ $rc != 0 || -n $ours ]]; then
    echo "check-unit: systemd-analyze verify failed (exit $rc):" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi
echo "check-unit: deploy/portcullis.service verified ($(systemd-analyze --version | head -n 1))"

if [[ ${CHECK_UNIT_SECURITY:-0} == 1 ]]; then
    systemd-analyze security --offline=yes --no-pager "$TMP/portcullis.service" || true
fi
