#!/usr/bin/env bash
# replay-pycaffe-notebooks.sh — run the code of BVLC Caffe's example notebooks
# (00-classification, net_surgery, 01-learning-lenet) against our `caffe` package, unchanged but for
# file paths, and check their numbers against `swiftjit run` / `swiftjit train` on the same inputs.
#
# Usage: tools/replay-pycaffe-notebooks.sh BVLC_CAFFE [NOTEBOOK...]
#   BVLC_CAFFE  a BVLC Caffe checkout or a bare git repository of it (its HEAD is used).
#   NOTEBOOK    00-classification, net_surgery, 01-learning-lenet (default: all three).
#
# Their files are copied to a scratch folder, never into this repository. What the notebooks would
# download is made locally in scratch/swiftjit-data: CaffeNet weights from
# `swiftjit init deploy.prototxt --seed 7 --unfilled-weights xavier` (deploy.prototxt names no fillers;
# Caffe's zero default would make every probability 0.001), ImageNet-style labels "n0000XXXX class XXX",
# and MNIST-shaped LMDBs from tools/notebooks/mnist_like.py. The substitutions, the Python 2 → 3
# rewrites and the IPython translations are listed in tools/notebooks/replay.py.
# Needs the lmdb and matplotlib PyPI packages (tools/install-deps.sh). The CLI is $SWIFTJIT_CLI, else
# the .build/release/swiftjit beside $SWIFTJIT_LIBRARY, else this checkout's. Keeps the scratch
# folder when $KEEP_SCRATCH is set. Exit status 1 when some notebook fails.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 BVLC_CAFFE [NOTEBOOK...]" >&2; exit 2; }
source_dir="$1"; shift
notebooks=("$@"); [[ ${#notebooks[@]} -gt 0 ]] || notebooks=(00-classification net_surgery 01-learning-lenet)
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -z "${SWIFTJIT_CLI:-}" ]]; then
    if [[ -n "${SWIFTJIT_LIBRARY:-}" && -x "$(dirname "$SWIFTJIT_LIBRARY")/swiftjit" ]]; then
        SWIFTJIT_CLI="$(dirname "$SWIFTJIT_LIBRARY")/swiftjit"
    else
        SWIFTJIT_CLI="$here/../.build/release/swiftjit"
    fi
fi
export SWIFTJIT_CLI MPLBACKEND=Agg
scratch="$(mktemp -d "${TMPDIR:-/tmp}/notebook-replay.XXXXXX")"
[[ -n "${KEEP_SCRATCH:-}" ]] && echo "scratch folder: $scratch" || trap 'rm -rf "$scratch"' EXIT

wanted=(examples/images examples/net_surgery examples/mnist models/bvlc_reference_caffenet
        python/caffe/imagenet/ilsvrc_2012_mean.npy
        examples/00-classification.ipynb examples/net_surgery.ipynb examples/01-learning-lenet.ipynb)
if [[ -d "$source_dir/examples" ]]; then
    for path in "${wanted[@]}"; do mkdir -p "$scratch/$(dirname "$path")"; cp -r "$source_dir/$path" "$scratch/$path"; done
elif git -C "$source_dir" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$source_dir" archive HEAD "${wanted[@]}" | tar -x -C "$scratch"
else
    echo "$0: $source_dir is neither a Caffe checkout nor a git repository of one" >&2
    exit 2
fi

data="$scratch/swiftjit-data"
mkdir -p "$data"
echo "making data: CaffeNet weights (swiftjit init --seed 7), labels, MNIST-shaped LMDBs"
"$SWIFTJIT_CLI" init "$scratch/models/bvlc_reference_caffenet/deploy.prototxt" --seed 7 \
    --unfilled-weights xavier -o "$data/caffenet_seed7.caffemodel" >/dev/null
mv "$scratch/python/caffe/imagenet/ilsvrc_2012_mean.npy" "$data/" && rm -rf "$scratch/python"
python3 -c "import sys; sys.stdout.write(''.join('n%08d class %d\n' % (i, i) for i in range(1000)))" \
    > "$data/synset_words.txt"
python3 "$here/notebooks/mnist_like.py" "$data" --train 2000 --test 1000

python3 -c "import caffe, os; print('replaying BVLC notebooks against', os.path.dirname(caffe.__file__))"
status=0
summary=()
cd "$scratch/examples"
for name in "${notebooks[@]}"; do
    echo "==== $name"
    if python3 "$here/notebooks/replay.py" run "$name.ipynb" "$scratch/$name" \
        && python3 "$here/notebooks/replay.py" check "$name" "$scratch/$name.npz"; then
        summary+=("PASS $name")
    else
        summary+=("FAIL $name"); status=1
    fi
done
printf '%s\n' "${summary[@]}"
exit $status
