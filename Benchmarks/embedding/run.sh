#!/usr/bin/env bash
# Memory of one model with many sessions, through the C API (see sessions_memory.c):
# ResNet-50 with 8 sessions and VGG16 (Fast R-CNN) with 4, on seeded MSRA weights written under /tmp.
# Needs tools/setup.sh first (the swiftjit CLI and .build/release/libswiftjit.so).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="$(mktemp -d "${TMPDIR:-/tmp}/swiftjit-embedding.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cc -std=c99 -O1 -Wall -I include Benchmarks/embedding/sessions_memory.c -L .build/release -lswiftjit -lpthread -o "$work/sessions_memory"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, ISA $(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo AVX2)"
while read -r name prototxt sessions; do
  .build/release/swiftjit init "$prototxt" --seed 7 --unfilled-weights msra -o "$work/$name.caffemodel" >/dev/null
  echo "== $name, $sessions sessions"
  "$work/sessions_memory" "$prototxt" "$work/$name.caffemodel" "$sessions"
  rm -f "$work/$name.caffemodel"
done <<NETS
resnet50 ../shared/zoo/resnet/ResNet-50-deploy.prototxt 8
vgg16 ../shared/zoo/faster_rcnn/VGG16/fast_rcnn/test.prototxt 4
NETS
