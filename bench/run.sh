#!/usr/bin/env bash
# The one command of the fan-out benchmark (see README.md); options: bench/run.sh --help
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
