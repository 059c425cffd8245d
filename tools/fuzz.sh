#!/usr/bin/env bash
# Coverage-guided fuzzing of one reader (or all of them) with libFuzzer and AddressSanitizer.
#   tools/fuzz.sh HARNESS SECONDS [libFuzzer flags...]   e.g. tools/fuzz.sh caffemodel 1800
#   tools/fuzz.sh all SECONDS                            each harness for SECONDS (CI: tools/test.sh, 10 s)
# Harnesses: net solver caffemodel solverstate binaryproto npy npz datum config request hdf5 hdf5-pipe hdf5-child
# (Tests/Fuzz/Harness/Harness.swift). The binary is built in .build/fuzz with
# -sanitize=fuzzer,address; runs first replay the seeds in Tests/Fuzz/corpus/HARNESS and every past
# finding in Tests/Fuzz/regressions/HARNESS (all of them, however short SECONDS is), then mutate,
# keeping what they learn in .build/fuzz/corpus/HARNESS. A crash, leak or timeout ends the run with
# exit 1 (for `all`, after the other harnesses ran) and leaves the input in .build/fuzz/crashes/; replay it with
#   SWIFTJIT_FUZZ_HARNESS=HARNESS .build/fuzz/release/swiftjit-fuzz FILE
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
harness=$1 seconds=$2
shift 2
harnesses=(net solver caffemodel solverstate binaryproto npy npz datum config request hdf5 hdf5-pipe hdf5-child)
# hdf5-child is the C driver of Tests/Fuzz/hdf5-child (the fork/pipe/reap half of HDF5 reading,
# with libhdf5), which clang builds in seconds. The Swift harnesses link only the readers
# (CaffeFormat, Graph, NumPy, DataPipeline, ServeProtocol): about 4 minutes from scratch here.
if [ "$harness" != hdf5-child ]; then
    swift build -c release --scratch-path .build/fuzz --product swiftjit-fuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSWIFTJIT_FUZZ -Xswiftc -parse-as-library >&2
fi
mkdir -p .build/fuzz/c
clang -g -O1 -fsanitize=fuzzer,address -I Sources/CHDF5 $(pkg-config --cflags hdf5) Tests/Fuzz/hdf5-child/harness.c \
    -o .build/fuzz/c/hdf5-child $(pkg-config --libs hdf5) 2>&1 | grep -v "Cannot export local symbol" >&2 || true
run() {
    local name=$1
    shift
    local binary=.build/fuzz/release/swiftjit-fuzz seeds="Tests/Fuzz/corpus/$name"
    [ "$name" != hdf5-child ] || { binary=.build/fuzz/c/hdf5-child; seeds=Tests/Fuzz/corpus/hdf5; }
    # Past findings are replayed as seeds, so a regression fails even a 10-second run; files that
    # crash libhdf5 itself are for the harnesses that read HDF5 in a child (an error, not a crash).
    local known=Tests/Fuzz/regressions/${name%-child} extra=()
    [ ! -d "$known" ] || extra+=("$known")
    case "$name" in hdf5|hdf5-child) extra+=(Tests/Fuzz/libhdf5-crashes) ;; esac
    mkdir -p ".build/fuzz/corpus/$name" .build/fuzz/crashes
    echo "== fuzzing $name for ${seconds}s" >&2
    # Leaks are reported (detect_leaks); an input that takes 20 s is reported as a hang.
    # No leak suppressions: libhdf5's own leaks on damaged files stay in the child process that
    # reads them (HDF5ChildReader), which ends with _exit before LeakSanitizer would look.
    # ASan and libFuzzer report crashes; Swift's backtracer is off (it outlived crashed runs).
    local log=".build/fuzz/$name.log" status=0
    SWIFTJIT_FUZZ_HARNESS=$name ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 SWIFT_BACKTRACE=enable=no "$binary" \
        ".build/fuzz/corpus/$name" "$seeds" ${extra[@]+"${extra[@]}"} \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
        -artifact_prefix=".build/fuzz/crashes/$name-" -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|SUMMARY|ERROR|Test unit written|children ended by a signal" "$log" >&2 || true
    [ "$status" -eq 0 ] || echo "$name: libFuzzer exited $status (full log: $log)" >&2
    return "$status"
}
if [ "$harness" = all ]; then
    failed=()
    for name in "${harnesses[@]}"; do run "$name" "$@" || failed+=("$name"); done
    [ ${#failed[@]} -eq 0 ] || { echo "fuzzing found problems in: ${failed[*]} (inputs in .build/fuzz/crashes/)" >&2; exit 1; }
else
    run "$harness" "$@"
fi
