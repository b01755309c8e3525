#!/usr/bin/env bash
# Makes sure what the tests talk to is there, installing it where it can
# (apt-get as root on Debian/Ubuntu, pip for Python packages), starting what is
# stopped, and saying in one line what is missing where it cannot:
#
#   scripts/services.sh all      PostgreSQL (each test creates and drops its own
#                                database) and Redis (tests use unique key
#                                prefixes), their binaries for the tests that
#                                start throwaway servers, moto's Secrets Manager
#                                server, and the packages below. scripts/test.sh
#                                sources it with `all`.
#   scripts/services.sh bench    all, and wrk and pgbench for make bench
#                                (`bench perf`: and perf, for make profile;
#                                `bench valgrind`: and valgrind, for make instructions).
#   scripts/services.sh python   only the Python packages of the template checks
#                                (tests/templates): pytest, cfn-lint,
#                                aws-sam-translator, PyYAML. make check-templates.
#
# It never stops or restarts a service that is already running.

_svc_fail() { echo "services: $*" >&2; return 1; }

_svc_apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing $* with apt-get" >&2
    local log
    log=$(mktemp /tmp/tms-apt.XXXXXX.log)
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$log" 2>&1; then
      rm -f "$log"
    else
      _svc_fail "apt-get could not install $* (its output: $log)"
    fi
  else
    _svc_fail "$* missing: install them (e.g. sudo apt-get install $*) and run again"
  fi
}

# pip install, as the machine allows it (a venv, root, PEP 668's marker, --user).
_svc_pip_install() { # what-for, packages...
  local what="$1" log
  shift
  command -v python3 >/dev/null || _svc_apt_install python3 python3-pip || return 1
  if ! python3 -m pip --version >/dev/null 2>&1; then
    _svc_apt_install python3-pip >/dev/null 2>&1 || true
    python3 -m pip --version >/dev/null 2>&1 ||
      _svc_fail "$(command -v python3) has no pip: install it (apt-get install python3-pip) and run again" || return 1
  fi
  echo "services: installing $what from PyPI: $*" >&2
  log=$(mktemp /tmp/tms-pip.XXXXXX.log)
  if python3 -m pip install --quiet "$@" >"$log" 2>&1 ||
    python3 -m pip install --quiet --break-system-packages "$@" >>"$log" 2>&1 ||
    python3 -m pip install --quiet --user "$@" >>"$log" 2>&1; then
    rm -f "$log"
  else
    _svc_fail "cannot install $what: run python3 -m pip install $* (pip's output: $log)"
  fi
}

# The Python packages of the template checks.
_svc_python() {
  command -v python3 >/dev/null || _svc_apt_install python3 python3-pip ||
    _svc_fail "python3 is missing: install it (apt-get install python3 python3-pip) and run again" || return 1
  if ! python3 -c 'import pytest, cfnlint, samtranslator, yaml' 2>/dev/null; then
    _svc_pip_install "the template checks' packages" pytest cfn-lint aws-sam-translator pyyaml || return 1
  fi
}

_svc_pg_bin() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

_svc_all() {
  if ! command -v redis-server >/dev/null || [ -z "$(_svc_pg_bin)" ]; then
    _svc_apt_install postgresql redis-server redis-tools procps || return 1
  fi
  if ! command -v pkill >/dev/null; then _svc_apt_install procps || return 1; fi
  # The transaction pooler the suites also run through (a throwaway per test).
  if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    _svc_apt_install pgbouncer || return 1
  fi

  # A local AWS Secrets Manager for the secrets tests: moto's server.
  if ! command -v python3 >/dev/null || ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    _svc_pip_install "moto's Secrets Manager server" 'moto[server]' || return 1
  fi
  _svc_python || return 1
  # Headless Chromium for the browser test; without it that test fails,
  # saying how to install it, and the rest of the suite still runs.
  "$(dirname "${BASH_SOURCE[0]}")/browser.sh" || true

  # Redis on 127.0.0.1:6379 (a test that kills or hangs Redis starts its own).
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    echo "services: starting redis-server on 127.0.0.1:6379" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp --logfile /tmp/tms-redis.log >/dev/null 2>&1 ||
      _svc_fail "cannot start redis-server on 127.0.0.1:6379 (its log: /tmp/tms-redis.log)" || return 1
  fi

  # PostgreSQL on 127.0.0.1:5432 with trust (or TEST_DATABASE_URL elsewhere).
  if [ -z "${TEST_DATABASE_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    local ver
    ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
    if command -v pg_ctlcluster >/dev/null && [ -n "$ver" ] && [ -d "/etc/postgresql/$ver/main" ]; then
      echo "services: starting the PostgreSQL $ver cluster" >&2
      # The tests connect as postgres without a password over TCP.
      local hba="/etc/postgresql/$ver/main/pg_hba.conf"
      if [ -w "$hba" ] && ! grep -q "tms-chat tests" "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust # tms-chat tests\nhost all all ::1/128 trust # tms-chat tests' "$hba"
      fi
      pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 ||
        _svc_fail "cannot start PostgreSQL $ver: see /var/log/postgresql/ (or set TEST_DATABASE_URL to one that runs)" || return 1
    else
      _svc_fail "no PostgreSQL on 127.0.0.1:5432: start one (trust auth for 127.0.0.1) or set TEST_DATABASE_URL" || return 1
    fi
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.2; done
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null ||
      _svc_fail "PostgreSQL $ver started but does not answer on 127.0.0.1:5432 within 10 s" || return 1
  fi
  return 0
}

# What `make bench` and `make profile` run besides the servers: the load
# generator, pgbench (PostgreSQL's package), perf for `make profile` and
# valgrind for `make instructions`.
_svc_bench() {
  _svc_all || return 1
  command -v wrk >/dev/null || _svc_apt_install wrk || return 1
  command -v pgbench >/dev/null ||
    _svc_fail "pgbench is missing (it comes with PostgreSQL: apt-get install postgresql)" || return 1
  if [ "${1:-}" = perf ] && ! command -v perf >/dev/null; then
    _svc_apt_install linux-perf || return 1
  fi
  if [ "${1:-}" = valgrind ]; then
    command -v callgrind_control >/dev/null || _svc_apt_install valgrind || return 1
    command -v ss >/dev/null || _svc_apt_install iproute2 || return 1
  fi
  return 0
}

case "${1:-all}" in
  all) _svc_all ;;
  python) _svc_python ;;
  bench) _svc_bench "${2:-}" ;;
  *) _svc_fail "usage: scripts/services.sh [all|python|bench [perf|valgrind]]" ;;
esac
