#!/usr/bin/env bash
# `make demo-det`: the mmdet workflow on a CPU in a few minutes, through the real tools/ scripts.
#   1. tools/generate_demo_data.py --dataset coco -> data/coco_demo/ (shapes with boxes + polygon masks, the real
#      COCO 2017 layout; skipped if present)
#   2. tools/train.py  Mask R-CNN (configs/demo/mask-rcnn_*_coco-demo-*.py) from scratch, into work_dirs/demo_det/
#   3. tools/test.py   the last checkpoint: bbox and segm mAP (pycocotools), pictures with boxes and masks
#      (--show-dir work_dirs/demo_det/pictures/, ground truth left | prediction right)
# Run from the repository root after `make setup`. Environment: PY (python, default .venv/bin/python),
# DEMO_WORK_DIR (default work_dirs/demo_det), DEMO_DATA (default data/coco_demo), DEMO_CFG_OPTIONS (extra
# --cfg-options for both tools, e.g. "train_cfg.max_iters=100").
set -euo pipefail

PY=${PY:-.venv/bin/python}
CONFIG=$(ls configs/demo/mask-rcnn_*_coco-demo-*.py 2>/dev/null | head -n 1 || true)
DATA=${DEMO_DATA:-data/coco_demo}
WORK=${DEMO_WORK_DIR:-work_dirs/demo_det}
SHOW=$WORK/pictures

if [ -z "$CONFIG" ] || [ ! -f tools/train.py ]; then
  echo "error: run scripts/demo_det.sh from the repository root (where tools/ and configs/demo/ are)." >&2; exit 1
fi
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found -- run 'make setup' first (or set PY=/path/to/python)." >&2; exit 1
fi
if ! "$PY" -c 'import mmcv.ops, mmdet, pycocotools' >/dev/null 2>&1; then
  echo "error: mmcv (with ops) / mmdet / pycocotools cannot be imported with $PY -- run 'make setup' first." >&2
  exit 1
fi

DATA=${DATA%/}
OPTS=(train_dataloader.dataset.data_root="$DATA/" val_dataloader.dataset.data_root="$DATA/"
      test_dataloader.dataset.data_root="$DATA/"
      val_evaluator.ann_file="$DATA/annotations/instances_val2017.json"
      test_evaluator.ann_file="$DATA/annotations/instances_val2017.json")
if [ -n "${DEMO_CFG_OPTIONS:-}" ]; then
  read -r -a EXTRA <<< "$DEMO_CFG_OPTIONS"; OPTS+=("${EXTRA[@]}")
fi

start=$(date +%s)
echo "==> [1/3] demo data: $DATA"
"$PY" tools/generate_demo_data.py --dataset coco --out "$DATA"

echo "==> [2/3] training Mask R-CNN on the CPU: $CONFIG -> $WORK (progress every 10 iterations)"
t_train=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --cfg-options "${OPTS[@]}"
t_train=$(( $(date +%s) - t_train ))
if [ ! -f "$WORK/last_checkpoint" ]; then
  echo "error: training finished without $WORK/last_checkpoint" >&2; exit 1
fi
CKPT=$(cat "$WORK/last_checkpoint")
TRAIN_LOG=$(ls -t "$WORK"/*/*.log 2>/dev/null | head -n 1 || true)

echo "==> [3/3] evaluating $CKPT (pictures -> $SHOW)"
rm -rf "$SHOW"; mkdir -p "$SHOW"
OUT_TXT=$WORK/test_output.txt
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" --show-dir "$SHOW" --cfg-options "${OPTS[@]}" \
  2>&1 | tee "$OUT_TXT"
BBOX=$(grep -E '^bbox mAP: ' "$OUT_TXT" | tail -n 1 | cut -d' ' -f3- || true)
SEGM=$(grep -E '^segm mAP: ' "$OUT_TXT" | tail -n 1 | cut -d' ' -f3- || true)
TEST_LOG=$(ls -t "$WORK"/test/*/*.log 2>/dev/null | head -n 1 || true)
NIMG=$(find "$SHOW" -maxdepth 1 -name '*.jpg' | wc -l)
total=$(( $(date +%s) - start ))

cat <<SUMMARY

============================== detection demo finished ==============================
 bbox mAP on the demo val set: ${BBOX:-?}
 segm mAP on the demo val set: ${SEGM:-?}
   (COCO mAP@[.5:.95] from pycocotools over the 3 classes drawn; an untrained model scores 0.000)
 checkpoint:      $CKPT
 training log:    ${TRAIN_LOG:-$WORK}
 test log:        ${TEST_LOG:-$WORK/test}
 pictures:        $SHOW/  ($NIMG images: ground truth left, predicted boxes + masks right)
 time:            ${total}s in total, ${t_train}s training
=====================================================================================
SUMMARY
[ -n "${BBOX:-}" ] && [ -n "${SEGM:-}" ] || { echo "error: no bbox/segm mAP in the test output ($OUT_TXT)" >&2; exit 1; }
