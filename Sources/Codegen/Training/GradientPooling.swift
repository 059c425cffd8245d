import CaffeFormat
import Graph
import Runtime

extension TrainingLowering {
    /// Pooling backward over N×C×H×W, Caffe's `PoolingLayer::Backward_cpu`: the input diff is
    /// zeroed, then
    /// - MAX adds each top diff to the first strict maximum of its window: the arg-max its forward
    ///   saved (`savedArgmax`), or, where it saved none, found again by the forward's scan
    ///   (clipped window, row by row, from −FLT_MAX);
    /// - AVE adds `dy / pool_size` over the window clipped to the image, `pool_size` being the
    ///   window clipped to `[−pad, H + pad)`.
    /// One task per (image, channel) plane.
    mutating func lowerPoolingBackward(_ node: Node) throws {
        guard analysis.writesBottomDiff(node, 0) else { return }
        let p = try node.poolingAttributes()
        let input = node.inputs[0], dims = shape(input)
        let g = p.geometry
        guard dims.count == 4 else { return try lowerPoolingNDBackward(node, g) }
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let outDims = shape(node.outputs[0])
        let (oh, ow) = (outDims[2], outDims[3])
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (sh, sw) = (g.stride[0], g.stride[1]), (ph, pw) = (g.pad[0], g.pad[1])
        let dy = try topDiff(node, node.outputs[0])
        let x = data(input)
        let dx = bottomDiff(node, 0)
        let geometry = "h\(h)w\(w) k\(kh)x\(kw) s\(sh)x\(sw) p\(ph)x\(pw) o\(oh)x\(ow)"
        let work = n * c * oh * ow * kh * kw
        let window = PoolingWindow(height: h, width: w, kernel: (kh, kw), pad: (ph, pw))
        switch p.method {
        case .max:
            if let argmax = savedArgmax[node.id] {
                try base.emitKernel(node, "pool.max.grad.scatter \(geometry)", operands: [Operand(argmax), dy, dx], tasks: n * c,
                                    work: n * c * (h * w + oh * ow)) { b in
                    let (index, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
                    b.forEachTask { plane in
                        let source = plane * (h * w), target = plane * (oh * ow)
                        b.loop(0..<(h * w)) { i in result[source + i] = b.constant(0) }
                        b.loop(0..<(oh * ow)) { o in
                            let winner = b.int(index[target + o])
                            b.when(winner >= 0) {
                                let at = source + winner
                                result[at] = result[at] + topDiff[target + o]
                            }
                        }
                    }
                }
                return
            }
            try base.emitKernel(node, "pool.max.grad \(geometry)", operands: [x, dy, dx], tasks: n * c, work: work) { b in
                let (x, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
                b.forEachTask { plane in
                    let source = plane * (h * w), target = plane * (oh * ow)
                    b.loop(0..<(h * w)) { i in result[source + i] = b.constant(0) }
                    b.loop(0..<oh) { oy in
                        b.loop(0..<ow) { ox in
                            let y0 = oy * sh - ph, x0 = ox * sw - pw
                            let (_, bestIndex) = window.maximum(b, x, plane: source, y0: y0, x0: x0, index: true)
                            let winner = b.int(bestIndex!)
                            b.when(winner >= 0) {
                                let at = source + winner
                                result[at] = result[at] + topDiff[target + oy * ow + ox]
                            }
                        }
                    }
                }
            }
        case .ave:
            try base.emitKernel(node, "pool.ave.grad \(geometry)", operands: [dy, dx], tasks: n * c, work: work) { b in
                let (topDiff, result) = (b.operand(0), b.operand(1))
                b.forEachTask { plane in
                    let source = plane * (h * w), target = plane * (oh * ow)
                    b.loop(0..<(h * w)) { i in result[source + i] = b.constant(0) }
                    b.loop(0..<oh) { oy in
                        b.loop(0..<ow) { ox in
                            let y0 = oy * sh - ph, x0 = ox * sw - pw
                            let y1 = b.min(y0 + kh, b.index(h + ph)), x1 = b.min(x0 + kw, b.index(w + pw))
                            let share = topDiff[target + oy * ow + ox] / b.float((y1 - y0) * (x1 - x0))
                            b.loop(from: b.max(y0, b.index(0)), to: b.min(y1, b.index(h))) { iy in
                                b.loop(from: b.max(x0, b.index(0)), to: b.min(x1, b.index(w))) { ix in
                                    let at = source + iy * w + ix
                                    result[at] = result[at] + share
                                }
                            }
                        }
                    }
                }
            }
        case .stochastic:
            throw unsupported(node, "STOCHASTIC pooling has no CPU implementation in Caffe either", hint: "use MAX or AVE")
        }
    }

    /// N-D pooling backward (spatial rank ≠ 2), the same rules over `PoolingWindowND`: the plane's
    /// diff is zeroed; MAX adds each top diff at its window's first strict maximum, found again by
    /// the forward's scan; AVE adds `dy / divisor` over the window clipped to the blob.
    mutating func lowerPoolingNDBackward(_ node: Node, _ g: PoolingGeometry) throws {
        let p = try node.poolingAttributes()
        let input = node.inputs[0], dims = shape(input)
        guard p.method != .stochastic else {
            throw unsupported(node, "STOCHASTIC pooling has no CPU implementation in Caffe either", hint: "use MAX or AVE")
        }
        let window = PoolingWindowND(input: Array(dims[2...]), output: Array(shape(node.outputs[0])[2...]), geometry: g)
        let planes = dims[0] * dims[1]
        let dy = try topDiff(node, node.outputs[0])
        let x = data(input)
        let dx = bottomDiff(node, 0)
        let isMax = p.method == .max
        try base.emitKernel(node, "pool.nd.\(isMax ? "max" : "ave").grad \(window.signature)", operands: [x, dy, dx],
                            tasks: planes, work: planes * window.work) { b in
            let (x, topDiff, result) = (b.operand(0), b.operand(1), b.operand(2))
            b.forEachTask { plane in
                let source = plane * window.inputCount, target = plane * window.outputCount
                b.loop(0..<window.inputCount) { i in result[source + i] = b.constant(0) }
                window.overOutputs(b) { starts, at in
                    if isMax {
                        let (_, bestIndex) = window.maximum(b, x, plane: source, starts: starts, index: true)
                        let winner = b.int(bestIndex!)
                        b.when(winner >= 0) {
                            result[source + winner] = result[source + winner] + topDiff[target + at]
                        }
                    } else {
                        let share = topDiff[target + at] / window.divisor(b, starts: starts)
                        window.overWindow(b, starts: starts) { i in result[source + i] = result[source + i] + share }
                    }
                }
            }
        }
    }
}
