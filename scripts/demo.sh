#!/usr/bin/env bash
# `make demo`: the whole OpenMMLab workflow on a CPU in a few minutes, through the real tools/ scripts.
#   1. tools/generate_demo_data.py  -> data/cityscapes_demo/ (synthetic streets, real Cityscapes layout; skipped if present)
#   2. tools/train.py  the Cityscapes demo config (configs/demo/*_cityscapes-demo-*.py), into work_dirs/demo/
#   3. tools/test.py   the last checkpoint, with --show-dir work_dirs/demo/overlays/ (ground truth | prediction)
# Run from the repository root after `make setup`. Environment: PY (python, default .venv/bin/python),
# DEMO_WORK_DIR (default work_dirs/demo), DEMO_DATA (default data/cityscapes_demo), DEMO_CFG_OPTIONS (extra
# --cfg-options for both tools, e.g. "train_cfg.max_iters=100").
set -euo pipefail

PY=${PY:-.venv/bin/python}
CONFIG=$(ls configs/demo/*_cityscapes-demo-*.py 2>/dev/null | head -n 1 || true)
DATA=${DEMO_DATA:-data/cityscapes_demo}
WORK=${DEMO_WORK_DIR:-work_dirs/demo}
SHOW=$WORK/overlays

if [ -z "$CONFIG" ] || [ ! -f tools/train.py ]; then
  echo "error: run scripts/demo.sh from the repository root (where tools/ and configs/ are)." >&2; exit 1
fi
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found -- run 'make setup' first (or set PY=/path/to/python)." >&2; exit 1
fi
if ! "$PY" -c 'import mmcv.ops, mmseg' >/dev/null 2>&1; then
  echo "error: mmcv (with ops) / mmseg cannot be imported with $PY -- run 'make setup' first." >&2; exit 1
fi

OPTS=(train_dataloader.dataset.data_root="$DATA/" val_dataloader.dataset.data_root="$DATA/"
      test_dataloader.dataset.data_root="$DATA/")
if [ -n "${DEMO_CFG_OPTIONS:-}" ]; then
  read -r -a EXTRA <<< "$DEMO_CFG_OPTIONS"; OPTS+=("${EXTRA[@]}")
fi

start=$(date +%s)
echo "==> [1/3] demo data: $DATA"
"$PY" tools/generate_demo_data.py --out "$DATA"

echo "==> [2/3] training on the CPU: $CONFIG -> $WORK (progress every 10 iterations)"
t_train=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --cfg-options "${OPTS[@]}"
t_train=$(( $(date +%s) - t_train ))
if [ ! -f "$WORK/last_checkpoint" ]; then
  echo "error: training finished without $WORK/last_checkpoint" >&2; exit 1
fi
CKPT=$(cat "$WORK/last_checkpoint")
TRAIN_LOG=$(ls -t "$WORK"/*/*.log 2>/dev/null | head -n 1 || true)

echo "==> [3/3] evaluating $CKPT (overlays -> $SHOW)"
mkdir -p "$SHOW"
OUT_TXT=$WORK/test_output.txt
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --show-dir "$SHOW" --cfg-options "${OPTS[@]}" \
  2>&1 | tee "$OUT_TXT"
MIOU=$(grep -E '^mIoU: ' "$OUT_TXT" | tail -n 1 | awk '{print $2}')
TEST_LOG=$(ls -t "$WORK"/test/*/*.log 2>/dev/null | head -n 1 || true)
NIMG=$(find "$SHOW" -maxdepth 1 -name 'test_*.png' | wc -l)
total=$(( $(date +%s) - start ))

cat <<SUMMARY

================================ demo finished ================================
 mIoU on the demo val set: ${MIOU:-?} %  (mean over the 10 classes the demo draws; one class everywhere: ~2 %)
 checkpoint:      $CKPT
 training log:    ${TRAIN_LOG:-$WORK}
 test log:        ${TEST_LOG:-$WORK/test}
 overlay images:  $SHOW/  ($NIMG images: ground truth left, prediction right)
 time:            ${total}s in total, ${t_train}s training
===============================================================================
SUMMARY
[ -n "${MIOU:-}" ] || { echo "error: no mIoU found in the test output ($OUT_TXT)" >&2; exit 1; }
