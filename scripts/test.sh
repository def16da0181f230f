#!/usr/bin/env bash
# Sets up everything (venv + Debian orthanc/dcmtk/dicom3tools) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --system
ulimit -s 32768 2>/dev/null || true   # holoscan (pulled in by the Deploy SDK) wants a 32 MB stack
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
