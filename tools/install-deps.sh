#!/usr/bin/env bash
# Installs the Debian packages SwiftJIT builds and tests against, skipping those already present.
# Needs root (or sudo) on Debian 12. Safe to run repeatedly.
set -euo pipefail
packages=(llvm-dev libopenblas-dev liblmdb-dev zlib1g-dev graphviz libturbojpeg0-dev libpng-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v swift >/dev/null || { echo "error: the Swift 6 toolchain is not on PATH (see https://swift.org/install)"; exit 1; }
# The tests compare with NumPy's own files; use the python3 on PATH (pip, not Debian, if it is a pyenv one).
if ! python3 -c "import numpy, pytest, cv2" 2>/dev/null; then
  echo "installing numpy, pytest and OpenCV (headless) for $(command -v python3)"
  python3 -m pip install -q numpy pytest "opencv-python-headless<5"
fi
# The export tests check ONNX files with onnx's checker and run them in ONNX Runtime (PyPI wheels).
if ! python3 -c "import onnx, onnxruntime" 2>/dev/null; then
  echo "installing onnx and onnxruntime for $(command -v python3)"
  python3 -m pip install -q onnx onnxruntime numpy
fi
# The inference server's tests talk to it through Triton's own client (PyPI).
if ! python3 -c "import tritonclient.http" 2>/dev/null; then
  echo "installing tritonclient[http] for $(command -v python3)"
  python3 -m pip install -q "tritonclient[http]"
fi
