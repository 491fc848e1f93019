#!/bin/bash
# The CUDA build against the CPU: every CLI command that takes --device, run on both, with
# the outputs kept for tests/gpu/compare.py. For a machine with an NVIDIA GPU (see README,
# "GPU builds"): nothing here runs in CI.
#
#   tests/gpu/check.sh CONVLENS_BINARY OUT_DIR
#
# DEVICES="cpu" runs the CPU half alone (a dry run of the script on a machine without a GPU).
# Uses the repo's assets (images, fashion-mini). With python3, torch and torchvision present
# it also checks a randomly initialised torchvision VGG-16 (max-pooling, input gradients
# through 13 convolutions); without them it says so and leaves that part out.
set -u
B=$(realpath "$1"); R=$(realpath -m "$2")
cd "$(dirname "$0")/../.."
mkdir -p "$R"; : > "$R/times.txt"
W=$(mktemp -d)  # runs, caches and the workspace: nothing of the user's is touched
export XDG_CACHE_HOME=$W/cache XDG_DATA_HOME=$W/data XDG_CONFIG_HOME=$W/config HOME=$W RUST_BACKTRACE=0
I=assets/images; D=assets/datasets/fashion-mini
VGG=""
if python3 -c "import torch, torchvision, safetensors" 2>/dev/null; then
  python3 - "$W/vgg16.safetensors" <<'PY' && VGG="--model $W/vgg16.safetensors"
import sys, torch, torchvision
from safetensors.torch import save_file
torch.manual_seed(0)
m = torchvision.models.vgg16()
save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])
PY
else
  echo "python3 with torch, torchvision and safetensors not found: the VGG-16 part is left out" | tee "$R/skipped.txt"
fi
# t NAME COMMAND...: runs it (100 s at most), keeps stdout/stderr, logs rc and seconds.
t() {
  local name=$1; shift
  local s; s=$(date +%s.%N)
  timeout 100 "$@" > "$R/$name.out" 2> "$R/$name.err"
  local rc=$?
  printf "%-26s rc=%d %6.2f s\n" "$name" $rc "$(awk "BEGIN{print $(date +%s.%N) - $s}")" | tee -a "$R/times.txt"
  [ $rc = 0 ] || tail -4 "$R/$name.err"
}
DEVICES=${DEVICES:-cuda cpu}
case " $DEVICES " in *" cuda "*)  # the first run JIT-compiles candle's kernels (~20 s)
  t warm_cuda "$B" predict --device cuda $I/chelsea.png ;;
esac
for d in $DEVICES; do
  t predict_$d "$B" predict --json --top 5 --device $d $I/chelsea.png $I/coffee.png $I/astronaut.png $I/rocket.jpg
  for m in gradcam gradcam++ scorecam layercam eigencam saliency integrated-gradients guided-backprop; do
    t cam_${m}_$d "$B" cam --method $m --json --device $d $I/chelsea.png --out "$R/cam_${m}_$d.png"
  done
  t act_$d "$B" activations --layer blocks.4 --device $d $I/chelsea.png --out "$R/act_$d.png"
  t filt_chollet_$d "$B" filters --layer blocks.4 --filters 0..8 --method chollet --device $d --out "$R/filt_chollet_$d.png"
  t filt_lucid_$d "$B" filters --layer blocks.4 --filters 0..8 --method lucid --steps 64 --device $d --out "$R/filt_lucid_$d.png"
  t train_extract_$d "$B" train --mode extract --epochs 4 --device $d --out "$W/extract_$d" --cache "$W/c_$d" $D
  t eval_extract_$d "$B" evaluate --json --device $d "$W/extract_$d" $D
  t train_finetune_$d "$B" train --mode finetune --epochs 2 --finetune-epochs 2 --device $d --out "$W/ft_$d" --cache "$W/c_$d" $D
  t eval_finetune_$d "$B" evaluate --json --device $d "$W/ft_$d" $D
  t train_augment_$d "$B" train --mode extract-augment --epochs 2 --device $d --out "$W/aug_$d" $D
  t train_scratch_$d "$B" train --mode scratch --epochs 4 --size 96 --device $d --out "$W/scratch_$d" $D
  t cam_trained_$d "$B" cam --json --device $d --model "$W/ft_$d" $I/chelsea.png --out "$R/cam_trained_$d.png"
  t examples_$d "$B" examples --layer blocks.4 --device $d --out "$R/examples_$d.png" $D
  t embed_$d "$B" embed --device $d --out "$R/embed_$d.png" $D
  t sanity_$d "$B" sanity --device $d --out "$R/sanity_$d.png" $I/chelsea.png
  t faith_$d "$B" faithfulness --device $d --methods gradcam,saliency,scorecam $I/chelsea.png
  if [ -n "$VGG" ]; then
    t cam_vgg16_$d "$B" cam --method saliency --json --device $d $VGG $I/chelsea.png --out "$R/cam_vgg16_$d.png"
    t filt_vgg16_$d "$B" filters --layer features.28 --filters 0..4 --method chollet --steps 10 --device $d $VGG --out "$R/filt_vgg16_$d.png"
  fi
done
rm -rf "$W"
