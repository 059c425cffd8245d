#!/usr/bin/env bash
# Streams a >= 2 GB synthetic LMDB through `swiftjit train` and reports images/s and RSS over time.
#
# The LMDB (3x224x224 uint8 Datums, written by LMDBStreamBenchmark) lives under /tmp, never in the
# repository, and is deleted at the end. The net is deliberately small (one strided convolution, a
# pooling layer and a 1000-way classifier) so the run measures the data path of training: LMDB read,
# transform, prefetch, feed, forward/backward, update. RSS is sampled from /proc every second.
#
#   Benchmarks/train-stream/run.sh [records=16000] [epochs=1]
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-16000}
epochs=${2:-1}
work=$(mktemp -d /tmp/swiftjit-train-stream.XXXXXX)
trap 'rm -rf "$work"' EXIT
swift build -c release --product swiftjit >/dev/null
swift build -c release --product LMDBStreamBenchmark >/dev/null
.build/release/LMDBStreamBenchmark write --path "$work/train_lmdb" --records "$records" | tail -1
du -sh "$work/train_lmdb"
batch=32
iterations=$(( records * epochs / batch ))
cat > "$work/net.prototxt" <<NET
name: "stream"
layer { name: "data" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 mean_value: 104 mean_value: 117 mean_value: 123 }
        data_param { source: "train_lmdb" batch_size: $batch backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 7 stride: 4 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 4 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 1000 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
NET
cat > "$work/solver.prototxt" <<SOLVER
net: "net.prototxt" base_lr: 0.001 momentum: 0.9 lr_policy: "fixed" max_iter: $iterations display: 50 snapshot: 0 snapshot_after_train: false type: "SGD"
SOLVER
cd "$work"
start=$(date +%s.%N)
"$OLDPWD/.build/release/swiftjit" train --solver solver.prototxt --plain > train.log 2>&1 &
pid=$!
echo "seconds,rss_mib" > rss.csv
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss" ] && echo "$(echo "$(date +%s.%N) - $start" | bc),$(( rss / 1024 ))" >> rss.csv
  sleep 1
done
wait "$pid" || { cat train.log; exit 1; }
end=$(date +%s.%N)
tail -2 train.log
seconds=$(echo "$end - $start" | bc)
images=$(( iterations * batch ))
echo "trained on $images images ($(du -sh train_lmdb | cut -f1) LMDB) in ${seconds}s: $(echo "$images / $seconds" | bc) images/s"
echo "RSS samples (MiB): first $(sed -n 2p rss.csv | cut -d, -f2), median $(tail -n +2 rss.csv | cut -d, -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'), max $(tail -n +2 rss.csv | cut -d, -f2 | sort -n | tail -1), last $(tail -1 rss.csv | cut -d, -f2)"
