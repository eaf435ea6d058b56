#!/usr/bin/env bash
# Install the system servers the test suite needs: Dovecot (IMAP) and a running
# PostgreSQL.  Idempotent; run as root (CI, or `sudo scripts/install-system-deps.sh`).
#
# Dovecot: only the binaries are needed.  The tests start private instances with
# their own config on free loopback ports (tests/servers/dovecot.py), so the
# package's own system service is stopped and disabled if apt started it.
set -euo pipefail

if [[ ${EUID} -ne 0 ]]; then
    echo "install-system-deps: run as root (e.g. sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

stop_system_dovecot() {
    # apt may start the packaged service where systemd (or sysv init) runs it.
    # It would not clash with our instances (their own config and ports), but a
    # stray daemon on 143 is confusing: stop it and keep it from starting.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl stop dovecot.service dovecot.socket >/dev/null 2>&1 || true
        systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/dovecot ]]; then
        /etc/init.d/dovecot stop >/dev/null 2>&1 || true
    fi
}

if ! command -v dovecot >/dev/null 2>&1; then
    echo "install-system-deps: installing dovecot-imapd dovecot-lmtpd"
    # policy-rc.d exit 101 tells invoke-rc.d not to start services during install
    # (Docker images already ship one; otherwise add it for this install only).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update
    apt-get install -y dovecot-imapd dovecot-lmtpd
    stop_system_dovecot
fi
echo "install-system-deps: dovecot $(dovecot --version)"

# poppler-utils (pdftoppm) renders an invoice PDF to PNG in the tests; poppler-data
# and the IPA fonts give it the Japanese glyphs a PDF reader supplies for the
# non-embedded CID fonts (HeiseiMin, HeiseiKakuGo).
if ! command -v pdftoppm >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "IPA"; then
    echo "install-system-deps: installing poppler-utils poppler-data fonts-ipafont"
    apt-get update
    apt-get install -y poppler-utils poppler-data fonts-ipafont-gothic fonts-ipafont-mincho
fi
echo "install-system-deps: $(pdftoppm -v 2>&1 | head -n 1)"

if ! command -v pg_isready >/dev/null 2>&1; then
    echo "install-system-deps: PostgreSQL is not installed; the tests marked 'postgres'" \
         "need a server on 127.0.0.1:5432 (apt-get install postgresql)" >&2
elif pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "install-system-deps: PostgreSQL is accepting connections on 127.0.0.1:5432"
else
    versions=$(ls /etc/postgresql 2>/dev/null || true)
    if [[ -z ${versions} ]]; then
        echo "install-system-deps: PostgreSQL client found but no cluster in /etc/postgresql;" \
             "install the server (apt-get install postgresql)" >&2
    else
        for version in ${versions}; do
            echo "install-system-deps: starting PostgreSQL ${version}/main"
            pg_ctlcluster --skip-systemctl-redirect "${version}" main start || true
        done
        for _ in $(seq 1 20); do
            pg_isready -q -h 127.0.0.1 -p 5432 && break
            sleep 0.5
        done
        if pg_isready -q -h 127.0.0.1 -p 5432; then
            echo "install-system-deps: PostgreSQL is accepting connections on 127.0.0.1:5432"
        else
            echo "install-system-deps: PostgreSQL did not come up on 127.0.0.1:5432" >&2
            exit 1
        fi
    fi
fi
