#!/usr/bin/env bash
# Install the optional expressive TTS engines (ChatTTS and Chatterbox) into .venv without
# letting their pins touch the rest of the environment:
#   1. the `expressive` extra from pyproject.toml: what the engines import at voice's code path,
#      with torch only as the CPU build torch==2.13.0 (no torchaudio: none runs beside it;
#      voice/tts/torchaudio_compat.py stands in for the few parts the engines use);
#   2. the engine packages themselves with --no-deps (chatterbox-tts pins torch==2.6.0,
#      torchaudio==2.6.0, numpy<2, transformers==5.2.0, gradio==6.8.0, ...; chattts, vocos,
#      encodec and s3tokenizer ask for torchaudio).
# Idempotent and quick on a second run. Called by `scripts/install.sh --dev` or `--expressive`.
# Weights are not installed: see docs/expressive-tts.md for where they go.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || { echo "install_expressive: run scripts/install.sh first" >&2; exit 1; }
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)

no_deps=(
  chattts==0.2.5
  vocos==0.1.0
  encodec==0.1.1
  s3tokenizer==0.3.0
  resemble-perth==1.0.1
  diffusers==0.29.0
  chatterbox-tts==0.1.7
)

# The extra (normal dependency resolution; torch==2.13.0 comes from this machine's disk).
mapfile -t extra < <(.venv/bin/python - <<'EOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["expressive"]))
EOF
)
"${PIP[@]}" "${extra[@]}"
# The engines, without their own (conflicting) requirements.
"${PIP[@]}" --no-deps "${no_deps[@]}"

# A broken torchaudio (a CUDA build that cannot load) would shadow voice's stand-in.
if .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchaudio') is None)"; then
  .venv/bin/python -c "import torchaudio" 2>/dev/null || {
    echo "install_expressive: removing a torchaudio that cannot load beside torch 2.13 (CPU)"
    .venv/bin/python -m pip uninstall -q -y torchaudio
  }
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "install_expressive: ChatTTS and Chatterbox installed (weights: docs/expressive-tts.md)"
