#!/usr/bin/env bash
# replay-pycaffe-tests.sh — run BVLC Caffe's own pycaffe test suite against our `caffe` package.
#
# Usage: tools/replay-pycaffe-tests.sh BVLC_CAFFE [pytest arguments...]
#   BVLC_CAFFE  a BVLC Caffe checkout (a folder with python/caffe/test) or a bare git repository
#               of it (its HEAD is used).
#
# Their files are copied to a scratch folder (never into this repository): python/caffe/test
# (without their caffe package, so `import caffe` resolves to ours) and models/ and examples/
# (test_draw draws every prototxt there). test_nccl is left out: it needs a GPU build.
# The library comes from $SWIFTJIT_LIBRARY or the checkout's .build/release (see python/README.md).
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 BVLC_CAFFE [pytest args...]" >&2; exit 2; }
source_dir="$1"; shift
scratch="$(mktemp -d "${TMPDIR:-/tmp}/pycaffe-replay.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

if [[ -d "$source_dir/python/caffe/test" ]]; then
    mkdir -p "$scratch/python/caffe"
    cp -r "$source_dir/python/caffe/test" "$scratch/python/caffe/"
    cp -r "$source_dir/models" "$source_dir/examples" "$scratch/"
elif git -C "$source_dir" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$source_dir" archive HEAD python/caffe/test models examples | tar -x -C "$scratch"
else
    echo "$0: $source_dir is neither a Caffe checkout nor a git repository of one" >&2
    exit 2
fi
rm -f "$scratch/python/caffe/test/test_nccl.py"

python3 -c "import caffe, os; print('replaying BVLC pycaffe tests against', os.path.dirname(caffe.__file__))"
cd "$scratch"
python3 -m pytest -p no:cacheprovider python/caffe/test "$@"
