#!/usr/bin/env bash
# Batch-32 forward of each architecture: convlens (the `forward` bench's `--arch ID`, built with
# the release profile through `cargo test --bench`, which a test build has already warmed)
# and eager PyTorch (`zoo_forward.py ID`), alternately, one architecture at a time, so both see
# the same machine state. Usage: zoo_compare.sh PYTHON ID [ID ...]
set -euo pipefail
PY=$1; shift
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
cargo test --release --bench forward --no-run >/dev/null 2>&1
for id in "$@"; do
  echo "== $id (load $(cut -d' ' -f1 /proc/loadavg))"
  cargo test --release --bench forward -- --arch "$id" 2>/dev/null | grep "forward batch 32"
  OMP_WAIT_POLICY=PASSIVE "$PY" "$HERE/zoo_forward.py" "$id"
done
