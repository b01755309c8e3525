#!/usr/bin/env bash
# `make check-templates`: the offline checks of template.yaml, s.yaml and the
# scripts, as a pytest suite (tests/templates/). scripts/services.sh installs
# its Python packages (pytest, cfn-lint, aws-sam-translator, PyYAML) first,
# and shellcheck comes from apt-get when it is missing and we are root.
# Extra arguments go to pytest: scripts/check-templates.sh -k s_yaml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh python
# The shell linter comes from the distribution when we may install it;
# without it those checks are skipped, and pytest says so.
if ! command -v shellcheck >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "check-templates: installing shellcheck with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1; } ||
    echo "check-templates: could not install shellcheck; its checks will be skipped" >&2
fi
exec python3 -m pytest tests/templates -q -p no:cacheprovider "$@"
