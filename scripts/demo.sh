#!/usr/bin/env bash
# The main job on the built-in default: build examples/ruby with its caches in a local directory.
# Sets up what is missing first (Docker engine, registry with the local base image), pulls nothing from
# the internet, needs no registry or S3 account.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/stack.sh" up
cd "$ROOT/examples/ruby"
"$ROOT/.venv/bin/invoke" build --service ruby "$@"
