import CaffeFormat
import Graph
import Runtime

extension Lowering {
    /// SPP (`SPPLayer`): for pyramid level `l` (`0..<pyramid_height`, `b = 2^l` bins per side) a
    /// Pooling with kernel `ceil(H / b)`, stride = kernel and pad `(kernel·b − H + 1) / 2` (per
    /// axis), flattened and concatenated along axis 1: output N × C·Σb². Each level is one kernel
    /// with Caffe's pooling semantics (output extents round up and drop a last window starting in
    /// the padding; MAX keeps the first strict maximum from −FLT_MAX; AVE divides by the window
    /// clipped to `[−pad, H + pad)`), writing straight into its slice of the concatenation. One
    /// task per (image, channel) plane.
    mutating func lowerSPP(_ node: Node) throws {
        let p = node.layer.sppParam
        let input = node.inputs[0], dims = shape(input)
        guard dims.count == 4 else { throw unsupported(node, "SPP needs an N×C×H×W bottom, got \(dims)") }
        let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3])
        let height = Int(p.pyramidHeight)
        guard height >= 1 else { throw unsupported(node, "pyramid_height must be at least 1") }
        guard p.pool == .max || p.pool == .ave else { throw unsupported(node, "only MAX and AVE pyramid pooling have a CPU forward") }
        let isMax = p.pool == .max
        let levels = (0..<height).map { 1 << $0 }
        let total = c * levels.map { $0 * $0 }.reduce(0, +)
        guard count(node.outputs[0]) == n * total else {
            throw Diagnostic("SPP output should hold \(n)×\(total) values, the graph says \(shape(node.outputs[0]))", at: node.location, layer: node.name)
        }
        let x = buffer(input), y = buffer(node.outputs[0])
        var levelOffset = 0
        for bins in levels {
            let (kh, ph, oh) = PoolingWindow.pyramidAxis(extent: h, bins: bins)
            let (kw, pw, ow) = PoolingWindow.pyramidAxis(extent: w, bins: bins)
            let offset = levelOffset
            let window = PoolingWindow(height: h, width: w, kernel: (kh, kw), pad: (ph, pw))
            let signature = "spp.\(isMax ? "max" : "ave") c\(c) h\(h)w\(w) k\(kh)x\(kw) p\(ph)x\(pw) o\(oh)x\(ow) row\(total) at\(offset)"
            try emitKernel(node, signature, operands: [Operand(x), Operand(y)], tasks: n * c, work: n * c * h * w) { b in
                let (source, target) = (b.operand(0), b.operand(1))
                b.forEachTask { plane in
                    let item = plane / c, channel = plane % c
                    let from = plane * (h * w), to = item * total + (offset + channel * (oh * ow))
                    b.loop(0..<oh) { oy in
                        b.loop(0..<ow) { ox in
                            let y0 = oy * kh - ph, x0 = ox * kw - pw
                            let at = to + oy * ow + ox
                            target[at] = isMax ? window.maximum(b, source, plane: from, y0: y0, x0: x0, index: false).0
                                               : window.average(b, source, plane: from, y0: y0, x0: x0)
                        }
                    }
                }
            }
            levelOffset += c * oh * ow
        }
    }
}
