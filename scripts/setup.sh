#!/usr/bin/env bash
# One-command environment set-up for effvit_plugins.
#   * creates .venv (Python 3.11)
#   * installs torch===2.13.0 / torchvision===0.28.0 (the registry's standard builds)
#   * builds mmcv 2.1.0 from source WITH its ops (C++20 flag for torch>=2.13), caches the wheel
#   * installs mmengine / mmdet / mmseg / mmpretrain and the test stack, openmim (--no-deps), then this project
#     (editable) and its metadata in the checkout (for `PYTHONPATH=$PWD mim ...`)
#   * builds Detectron2 from source (it publishes no wheels for current torch), caches the wheel like mmcv's
#   * verifies that mmcv.ops and detectron2._C load (a wrong build silently installs them without ops)
# Environment: EFFVIT_VENV (default .venv), EFFVIT_CACHE (wheel cache, default ~/.cache/effvit_plugins),
# DETECTRON2_SRC (a Detectron2 source: directory, archive or pip URL; default: the pinned archive in
# EFFVIT_THIRD_PARTY, default ../shared/third_party, else the official git repository), MAX_JOBS (compile jobs).
# Idempotent: every step is skipped when its check already passes, so a second run takes seconds.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${EFFVIT_VENV:-$ROOT/.venv}
CACHE=${EFFVIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/effvit_plugins}
PY=$VENV/bin/python
STEP="start"
trap 'echo "[setup] FAILED in step: $STEP (exit $?). Fix the cause above and re-run: make setup" >&2' ERR
say() { echo "[setup] $*"; }
# pip install, quiet; the registry mirror's "Location ... is ignored" notices are dropped.
pipq() {
  local rc=0
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; } || rc=$?
  rc=${PIPESTATUS[0]}
  return "$rc"
}

# `pip check`, minus exactly one known line: openmim is installed without its dependency opendatalab (see the
# openmim step); any other broken requirement fails the check.
OPENMIM_VERSION=0.3.9
OPENMIM_KNOWN="openmim $OPENMIM_VERSION requires opendatalab, which is not installed."
pip_check() {
  local out
  out=$("$PY" -m pip check 2>&1) && return 0
  [ -z "$(printf '%s\n' "$out" | grep -v -x -F "$OPENMIM_KNOWN")" ]
}

STEP="virtualenv"
if [ ! -x "$PY" ]; then
  say "creating virtualenv $VENV"
  PYBIN=$(command -v python3.11 || command -v python3)
  "$PYBIN" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version' 
  "$PYBIN" -m venv "$VENV"
else
  say "virtualenv $VENV exists"
fi

STEP="torch 2.13.0 + torchvision 0.28.0"
if "$PY" -c 'import torch, torchvision; assert torch.__version__.split("+")[0] == "2.13.0" and torchvision.__version__.split("+")[0] == "0.28.0"' 2>/dev/null; then
  say "$STEP already installed"
else
  say "installing $STEP (the standard registry builds; this downloads a few GB once)"
  pipq "torch===2.13.0" "torchvision===0.28.0"
fi

STEP="build tools (setuptools<82 keeps pkg_resources for mmcv/mmengine)"
if "$PY" -c 'import pkg_resources, wheel, ninja, psutil' 2>/dev/null; then
  say "build tools present"
else
  say "installing $STEP"
  pipq "setuptools>=77,<82" wheel ninja psutil
fi

STEP="mmcv 2.1.0 with ops"
if "$PY" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  say "mmcv 2.1.0 with ops already installed"
else
  mkdir -p "$CACHE/wheels"
  WHL=$(ls "$CACHE"/wheels/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHL" ]; then
    say "building mmcv 2.1.0 from source with CPU ops (~20 min on 2 cores; cached afterwards in $CACHE/wheels)"
    BUILD=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: "mmcv==2.1.0" -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
    # torch>=2.13 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$BUILD"/mmcv-2.1.0/setup.py
    (cd "$BUILD"/mmcv-2.1.0 && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} \
       "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps -w "$CACHE/wheels" . )
    rm -rf "$BUILD"
    WHL=$(ls "$CACHE"/wheels/mmcv-2.1.0-*.whl | head -n1)
  else
    say "reusing cached wheel $WHL"
  fi
  pipq --no-deps "$WHL"
  pipq "mmengine==0.10.7"  # mmcv's runtime deps (addict, yapf, ...) come with mmengine
  pipq addict packaging pyyaml yapf opencv-python
fi

STEP="OpenMMLab stack + test tools (requirements.txt)"
# present (found, not imported: the final check imports the libraries) and consistent (pip check)
if "$PY" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
     mmengine mmdet mmseg mmpretrain timm pycocotools lvis cityscapesscripts ftfy regex pytest \
     fvcore iopath omegaconf hydra yacs tabulate cloudpickle termcolor tqdm matplotlib tensorboard black onnx onnxruntime \
     click colorama model_index pandas requests rich \
   && pip_check; then
  say "requirements already satisfied"
else
  say "installing $STEP"
  pipq -r requirements.txt
fi

STEP="openmim $OPENMIM_VERSION (--no-deps)"
# `mim search / train / test effvit_plugins`. Installed without its dependencies: openmim requires opendatalab, whose
# dependency openxlab pins setuptools~=60.2 and downgrades requests / rich / tqdm, which breaks this stack. Its other
# requirements (Click, colorama, model-index, pandas, requests, rich, tabulate) come from requirements.txt.
if "$PY" -c 'import importlib.metadata as m, sys; sys.exit(m.version("openmim") != sys.argv[1])' "$OPENMIM_VERSION" \
     2>/dev/null; then
  say "$STEP already installed"
else
  say "installing $STEP"
  pipq --no-deps "openmim==$OPENMIM_VERSION"
fi

STEP="Detectron2 (source build)"
D2_URL="git+https://github.com/facebookresearch/detectron2.git"
D2_TARBALL=detectron2-02b5c4e.tar.gz
D2_SHA256=242b9d82c5479746ea3e4bbec5c0f4bea881ded85df269ad87e3f7de516a4c56
THIRD_PARTY=${EFFVIT_THIRD_PARTY:-$ROOT/../shared/third_party}
if (cd / && "$PY" -c 'import detectron2, detectron2._C') 2>/dev/null; then
  say "detectron2 already installed"
else
  # The cached wheel is keyed by the source and the torch version (its extension is built against torch's ABI).
  TORCH_VER=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
  if [ -n "${DETECTRON2_SRC:-}" ]; then
    D2_SRC=$DETECTRON2_SRC
    D2_KEY="src-$(printf '%s' "$D2_SRC" | sha256sum | cut -c1-12)"
    say "Detectron2 source from DETECTRON2_SRC: $D2_SRC"
  elif [ -f "$THIRD_PARTY/$D2_TARBALL" ]; then
    STEP="Detectron2 (checksum of $THIRD_PARTY/$D2_TARBALL)"
    echo "$D2_SHA256  $THIRD_PARTY/$D2_TARBALL" | sha256sum --check --quiet -
    STEP="Detectron2 (source build)"
    D2_SRC=$THIRD_PARTY/$D2_TARBALL
    D2_KEY="02b5c4e"
    say "Detectron2 source: $D2_SRC (commit 02b5c4e, checksum ok)"
  else
    D2_SRC=$D2_URL
    D2_KEY="git-main"
    say "Detectron2 source: $D2_URL (no $THIRD_PARTY/$D2_TARBALL, DETECTRON2_SRC unset)"
  fi
  D2_WHEELS="$CACHE/wheels/detectron2-$D2_KEY-torch$TORCH_VER"
  WHL=$(ls "$D2_WHEELS"/detectron2-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHL" ]; then
    # No -std flag in Detectron2's setup.py: torch's BuildExtension adds its own (c++20 for torch >= 2.13).
    say "building Detectron2 with its C++ ops (~2 min on 2 cores; cached afterwards in $D2_WHEELS)"
    BUILD=$(mktemp -d)
    MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
      -w "$BUILD" "$D2_SRC" 2>&1 | { grep -v "^WARNING: Location" || true; }
    mkdir -p "$D2_WHEELS"
    mv "$BUILD"/detectron2-*.whl "$D2_WHEELS"/
    rm -rf "$BUILD"
    WHL=$(ls "$D2_WHEELS"/detectron2-*.whl | head -n1)
  else
    say "reusing cached wheel $WHL"
  fi
  # its runtime requirements (fvcore, iopath, omegaconf, hydra-core, ...) are pinned in requirements.txt
  pipq "$WHL"
fi

STEP="effvit_plugins (editable)"
# where `import effvit_plugins` would load from (found, not imported: the final check imports it)
if (cd / && "$PY" -c 'import importlib.util as u, os.path as p, sys; s = u.find_spec("effvit_plugins")
sys.exit(0 if s and s.origin and p.dirname(p.dirname(p.realpath(s.origin))) == p.realpath(sys.argv[1]) else 1)' \
     "$ROOT") 2>/dev/null; then
  say "effvit_plugins already installed in editable mode"
else
  say "installing $STEP"
  pipq --no-build-isolation --no-deps -e .
fi

STEP="effvit_plugins.egg-info in the checkout (for mim)"
# mim looks for a package's files (.mim/tools, .mim/configs, model-index.yml) next to its metadata. An editable
# install keeps the metadata in site-packages, so mim run from the checkout (`PYTHONPATH=$PWD mim ...`) needs a copy
# here (gitignored), written by setuptools' egg_info.
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' effvit_plugins/version.py)
if grep -qx "Version: $VERSION" effvit_plugins.egg-info/PKG-INFO 2>/dev/null; then
  say "effvit_plugins.egg-info $VERSION present"
else
  say "writing effvit_plugins.egg-info ($VERSION)"
  out=$("$PY" -W ignore setup.py -q egg_info 2>&1) || { echo "$out" >&2; false; }
fi

STEP="final check: mmcv.ops, mmseg, mmdet, mmpretrain, detectron2._C, effvit_plugins import"
(cd / && "$PY" - <<'PY'
import mmcv, mmcv.ops, torch
from mmcv.ops import nms, RoIAlign  # noqa: F401  (compiled ops must be present)
import detectron2, detectron2._C  # noqa: F401  (Detectron2's compiled ops)
import mmengine, mmseg, mmdet, mmpretrain, effvit_plugins  # noqa: F401
import onnx, onnxruntime  # noqa: F401  (tools/deploy/export_onnx.py, onnxruntime benchmark)
import mim  # noqa: F401  (openmim, installed without opendatalab)
print(f"[setup] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops loaded), mmengine {mmengine.__version__}, "
      f"mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, "
      f"detectron2 {detectron2.__version__} (ops loaded)")
PY
)
touch "$VENV/.effvit_setup_ok"
