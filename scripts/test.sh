#!/usr/bin/env bash
# Install voice with its test tools, then run linters and the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
.venv/bin/ruff check voice tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
