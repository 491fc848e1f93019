#!/bin/sh
# Makes the committed figures of assets/figures again, from the repository root:
#   sh assets/figures/regenerate.sh
# The Lucid filter figure takes ~6 minutes on 2 cores, the Chollet one ~1 minute.
# tests/suite/cli_reproduce.rs runs these same `convlens` lines and checks that each PNG and sidecar
# comes out byte for byte as committed; a rendering change shows up there, and the figures
# are then made again with this script, looked at and committed.
set -eu
convlens() { cargo run --release --quiet -- "$@"; }
convlens cam assets/images/chelsea.png --out assets/figures/cam_chelsea_gradcam.png
convlens activations assets/images/chelsea.png --layer stem --cols 8 --out assets/figures/activations_chelsea_stem.png
convlens filters --layer blocks.4 --filters 0..40 --out assets/figures/filters_blocks4.png
convlens filters --layer blocks.4 --method lucid --filters 0..16 --out assets/figures/filters_lucid_blocks4.png
