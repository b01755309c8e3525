#!/usr/bin/env bash
# Makes sure headless Chromium is there for the browser test
# (tests/tests/api/browser.rs): installs Debian's `chromium` with apt-get when
# it is missing and we can (root), says in one line what to do otherwise.
# Run by scripts/services.sh, which goes on without it: the browser test then
# fails, saying how to install it.
set -uo pipefail

command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser: installing chromium with apt-get" >&2
  # Another apt-get may hold the lock: wait for it rather than fail.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null &&
    exit 0
fi
echo "browser: chromium is missing and could not be installed: install it (e.g. sudo apt-get install chromium)" >&2
exit 1
