#!/usr/bin/env bash
# Runs a command inside the project's environment (.venv + the built workspace).
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$@"
