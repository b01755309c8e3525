#!/usr/bin/env bash
# Makes sure the services the test suite talks to are there: PostgreSQL (each
# test creates and drops its own database on it) and Redis (tests use unique
# key prefixes), plus their binaries for the tests that start throwaway
# servers. Installs them with apt-get where it can (root on Debian/Ubuntu),
# starts them if they are stopped, and says clearly what is missing otherwise.
# Sourced by scripts/test.sh; runnable on its own.

_svc_fail() { echo "services: $*" >&2; return 1 2>/dev/null || exit 1; }

_svc_apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing $* with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    _svc_fail "$* missing: install them (e.g. sudo apt-get install $*) and run again"
  fi
}

_svc_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

_svc_ensure() {
  if ! command -v redis-server >/dev/null || [ -z "$(_svc_pg_bin)" ]; then
    _svc_apt_install postgresql redis-server redis-tools procps || return 1
  fi
  if ! command -v pkill >/dev/null; then _svc_apt_install procps || return 1; fi

  # A local AWS Secrets Manager for the secrets tests: moto's server, from PyPI.
  if ! command -v python3 >/dev/null; then _svc_apt_install python3 python3-pip || return 1; fi
  if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "services: installing moto[server] from PyPI" >&2
    python3 -m pip install --quiet 'moto[server]' 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages 'moto[server]' ||
      { _svc_apt_install python3-pip && python3 -m pip install --quiet --break-system-packages 'moto[server]'; } ||
      _svc_fail "cannot install moto[server] (python3 -m pip install 'moto[server]')" || return 1
  fi

  # Redis on 127.0.0.1:6379 (a test that kills or hangs Redis starts its own).
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    echo "services: starting redis-server on 127.0.0.1:6379" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/tms-redis.log || _svc_fail "cannot start redis-server" || return 1
  fi

  # PostgreSQL on 127.0.0.1:5432 with trust (or TEST_DATABASE_URL elsewhere).
  if [ -z "${TEST_DATABASE_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
      echo "services: starting the PostgreSQL cluster" >&2
      local ver
      ver=$(ls /etc/postgresql | sort -V | tail -n 1)
      # The tests connect as postgres without a password over TCP.
      local hba="/etc/postgresql/$ver/main/pg_hba.conf"
      if [ -w "$hba" ] && ! grep -q "tms-chat tests" "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust # tms-chat tests\nhost all all ::1/128 trust # tms-chat tests' "$hba"
      fi
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
        _svc_fail "cannot start PostgreSQL $ver" || return 1
    else
      _svc_fail "no PostgreSQL on 127.0.0.1:5432: start one (trust auth for 127.0.0.1) or set TEST_DATABASE_URL" || return 1
    fi
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.2; done
  fi
  return 0
}

_svc_ensure
