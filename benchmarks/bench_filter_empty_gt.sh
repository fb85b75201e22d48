#!/bin/bash
# Issue 15.2: does keeping face-less images as negatives (filter_empty_gt=False) change COCO AP?
# airport + 3 face-less floor crops (../shared/cases/01-empty-val-images.py), the Open Model Zoo 0200 weights
# fine-tuned 8 epochs at input 256, seeds 0/1/2, for LR in $LRS; trained and evaluated on the same 13 images.
# usage: benchmarks/bench_filter_empty_gt.sh OUT [LRS]   (from the repository root; ~25 min on 2 busy cores)
set -e
OUT=$(realpath -m "${1:?OUT folder}"); LRS=${2:-"0.01 0.03"}
REPO=$(cd "$(dirname "$0")/.." && pwd); SHARED=${SHARED:-$REPO/../shared}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python}
mkdir -p "$OUT"; cd "$OUT"
SHARED=$SHARED PROJECT=$REPO $PY "$SHARED/cases/01-empty-val-images.py" neg > /dev/null
T=$REPO/model_templates/face-detection/face-detection-0200/template.yaml
[ -d wd ] || $PY "$REPO/tools/instantiate_template.py" "$T" wd --do-not-load-snapshot > /dev/null
[ -d wd_neg ] || { cp -r wd wd_neg; echo 'data = dict(train=dict(dataset=dict(filter_empty_gt=False)))' >> wd_neg/model.py; }
[ -f omz0200.pth ] || $PY "$REPO/tools/import_openvino_weights.py" "$T" \
    "$SHARED/models/omz/face-detection-0200/FP16/face-detection-0200.xml" omz0200.pth --calibrate-bn "$SHARED/data/airport/train"
ap() { $PY -c "import yaml,sys; print(round({e['key']: e['value'] for e in yaml.safe_load(open(sys.argv[1]))['metrics']}['ap'], 2))" "$1"; }
$PY wd/eval.py --load-weights omz0200.pth --test-ann-files neg/ann.json --test-data-roots neg --cache-dir '' \
    --save-metrics-to base.yaml > base.log 2>&1
echo "imported weights: AP $(ap base.yaml)"
for lr in $LRS; do for seed in 0 1 2; do for v in wd wd_neg; do
  o=run_${v}_lr${lr}_s$seed
  $PY $v/train.py --train-ann-files neg/ann.json --train-data-roots neg --save-checkpoints-to $o --overwrite \
      --epochs 8 --gpu-num 0 --batch-size 8 --workers 0 --load-weights omz0200.pth --base-learning-rate $lr \
      --seed $seed > $o.log 2>&1
  $PY $v/eval.py --load-weights $o/latest.pth --test-ann-files neg/ann.json --test-data-roots neg --cache-dir '' \
      --save-metrics-to $o.yaml >> $o.log 2>&1
  echo "lr $lr seed $seed $([ $v = wd ] && echo 'dropped (default)' || echo 'kept as negatives'): AP $(ap $o.yaml)"
done; done; done
