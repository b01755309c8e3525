#!/usr/bin/env bash
# `make check-templates`: the offline checks of template.yaml, s.yaml and the
# scripts, as a pytest suite (tests/templates/). scripts/services.sh installs
# its Python packages (pytest, cfn-lint, aws-sam-translator, PyYAML) first.
# Extra arguments go to pytest: scripts/check-templates.sh -k s_yaml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh python
exec python3 -m pytest tests/templates -q -p no:cacheprovider "$@"
