#!/usr/bin/env python3
"""Run one forward-pass timing of a Caffe net in a peer runtime, in this process, and print JSON.

Peers: OpenCV DNN (cv2.dnn.readNetFromCaffe) and ONNX Runtime (an .onnx exported from the same
prototxt and caffemodel). compare.py runs each call in its own process so that peak memory is per
peer. Inputs are seeded normal noise with the shapes given by --input NAME=d0,d1,...; a `rois` input
gets valid boxes [batch_index, x1, y1, x2, y2] inside the image instead.

  peers.py opencv NET.prototxt W.caffemodel --input data=1,3,224,224 --threads 2 --iterations 20
  peers.py ort NET.onnx --input data=1,3,224,224 --threads 2 --iterations 20
  peers.py opencv ... --save-outputs out.npz --outputs prob     (for numeric comparisons)
"""
import argparse
import json
import sys
import time

import numpy as np


def parse_inputs(specs, seed):
    rng = np.random.RandomState(seed)
    inputs = {}
    for spec in specs:
        name, dims = spec.split("=", 1)
        shape = tuple(int(d) for d in dims.split(","))
        if name == "rois":
            count = shape[0]
            boxes = np.zeros(shape, dtype=np.float32)
            x1 = rng.uniform(0, 150, count); y1 = rng.uniform(0, 150, count)
            boxes[:, 1], boxes[:, 2] = x1, y1
            boxes[:, 3], boxes[:, 4] = x1 + rng.uniform(16, 70, count), y1 + rng.uniform(16, 70, count)
            inputs[name] = boxes
        else:
            inputs[name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def time_calls(run, iterations, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"ms_median": times[len(times) // 2], "ms_min": times[0], "ms_mean": sum(times) / len(times)}


def run_opencv(args, inputs):
    import cv2
    cv2.setNumThreads(args.threads)
    start = time.perf_counter()
    net = cv2.dnn.readNetFromCaffe(args.model, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = list(inputs)
    for name in names:
        net.setInput(inputs[name], name)
    outputs = args.outputs or net.getUnconnectedOutLayersNames()
    net.forward(outputs)  # OpenCV compiles lazily, at the first forward
    load_ms = (time.perf_counter() - start) * 1000

    def run():
        for name in names:
            net.setInput(inputs[name], name)
        return net.forward(outputs)

    result = time_calls(run, args.iterations, args.warmup)
    result["load_ms"] = load_ms
    if args.save_outputs:
        values = run()
        np.savez(args.save_outputs, **{name: np.asarray(v, dtype=np.float32) for name, v in zip(outputs, values)})
    return result


def run_ort(args, inputs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    start = time.perf_counter()
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    outputs = args.outputs or [o.name for o in session.get_outputs()]
    session.run(outputs, inputs)
    load_ms = (time.perf_counter() - start) * 1000
    result = time_calls(lambda: session.run(outputs, inputs), args.iterations, args.warmup)
    result["load_ms"] = load_ms
    if args.save_outputs:
        values = session.run(outputs, inputs)
        np.savez(args.save_outputs, **{name: v for name, v in zip(outputs, values)})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=["opencv", "ort"])
    parser.add_argument("model", help="prototxt (opencv) or .onnx (ort)")
    parser.add_argument("weights", nargs="?", help="caffemodel (opencv only)")
    parser.add_argument("--input", action="append", default=[], help="NAME=d0,d1,... (repeatable)")
    parser.add_argument("--inputs-npz", help="take inputs from this .npz instead of random values")
    parser.add_argument("--outputs", nargs="*", help="outputs to compute (default: the net's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--save-outputs", help="write the outputs of one more forward to this .npz")
    args = parser.parse_args()
    if args.peer == "opencv" and not args.weights:
        parser.error("opencv needs a caffemodel")
    inputs = dict(np.load(args.inputs_npz)) if args.inputs_npz else parse_inputs(args.input, args.seed)
    result = run_opencv(args, inputs) if args.peer == "opencv" else run_ort(args, inputs)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
