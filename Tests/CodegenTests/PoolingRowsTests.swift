import CaffeFormat
@testable import Codegen
import Graph
import NumPy
import Runtime
import Testing

/// 2-D MAX and AVE pooling whose interior rows run a vector of outputs at a time (`PoolingRows`)
/// and global AVE pooling summed a vector at a time, against a plain-loop port of Caffe's
/// `PoolingLayer::Forward_cpu`: bit for bit where the kernel keeps Caffe's order (every windowed
/// case), within 1e-6 of the largest output for the global sum (a tree over lanes). The cases
/// cover strides 1 and 2, rows of several vectors with a ragged last one (stored whole or under
/// its mask, `storesWhole`), rows shorter than half a vector, padded borders around the interior,
/// a mask top (which keeps the scalar kernel), and planes smaller and larger than a vector, on the
/// host's vector width and the AVX2 one.
@Suite("Pooling by rows")
struct PoolingRowsTests {
    struct Case: CustomStringConvertible, Sendable {
        var n = 1, c = 3, h = 13, w = 13
        var params = "kernel_size: 3 stride: 2"
        var maskTop = false
        var description: String { "\(n)×\(c)×\(h)×\(w) \(params)" + (maskTop ? " + mask" : "") }
    }

    static let cases: [Case] = [
        Case(params: "pool: MAX kernel_size: 3 stride: 2"),                    // SqueezeNet's pool5 geometry, smaller
        Case(n: 2, c: 2, h: 41, w: 113, params: "pool: MAX kernel_size: 3 stride: 2"),   // 56 outputs: vectors + a ragged one
        Case(c: 2, h: 9, w: 40, params: "pool: MAX kernel_size: 2 stride: 1"), // stride 1, 39 outputs
        Case(c: 2, h: 12, w: 37, params: "pool: MAX kernel_size: 3 stride: 2 pad: 1"), // borders around the interior
        Case(c: 2, h: 12, w: 37, params: "pool: AVE kernel_size: 3 stride: 2 pad: 1"),
        Case(n: 2, c: 3, h: 7, w: 51, params: "pool: AVE kernel_size: 3 stride: 1"),
        Case(c: 2, h: 6, w: 5, params: "pool: AVE kernel_size: 2 stride: 2"),   // 2 outputs per row
        Case(c: 2, h: 27, w: 27, params: "pool: MAX kernel_size: 3 stride: 2", maskTop: true),
        Case(c: 4, h: 13, w: 13, params: "pool: AVE global_pooling: true"),     // global: a vector sum
        Case(n: 2, c: 3, h: 7, w: 7, params: "pool: AVE kernel_size: 7 stride: 1"), // ResNet-50's pool5: the plane
        Case(c: 2, h: 3, w: 2, params: "pool: AVE global_pooling: true"),       // fewer values than a vector
    ]

    @Test("interior rows by vectors equal Caffe's loops", arguments: cases, VectorISA.allCases)
    func againstCaffe(_ c: Case, _ isa: VectorISA) throws {
        let text = """
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: \(c.n) dim: \(c.c) dim: \(c.h) dim: \(c.w) } } }
        layer { name: "pool" type: "Pooling" bottom: "x" top: "y" \(c.maskTop ? "top: \"mask\" " : "")pooling_param { \(c.params) } }
        """
        let graph = try GraphBuilder(phase: .test).build(CaffeFiles.parseNet(text: text, file: "pool.prototxt"))
        let attributes = try graph.nodes[1].poolingAttributes()
        var values = SeededValues(seed: 0x2545_F491_4F6C_DD1D, step: 1 / 97.0)
        let input = NDArray(shape: [c.n, c.c, c.h, c.w], data: values.next(c.n * c.c * c.h * c.w).map { $0 - 0.4 })
        let net = try isa.shared.compile(graph: graph, parameters: [:])
        let y = try net.run(inputs: ["x": input])["y"]!
        let g = attributes.geometry, maximum = attributes.method == .max
        let reference = Self.caffePooling(input, kernel: (g.kernel[0], g.kernel[1]), stride: (g.stride[0], g.stride[1]), pad: (g.pad[0], g.pad[1]),
                                          out: (y.shape[2], y.shape[3]), maximum: maximum)
        #expect(y.shape == [c.n, c.c, reference.count / (c.n * c.c * y.shape[3]), y.shape[3]])
        let global = y.shape[2] == 1 && y.shape[3] == 1 && g.pad.allSatisfy { $0 == 0 }
        if global && !maximum {
            let scale = reference.map(abs).max()!
            #expect(zip(y.data, reference).allSatisfy { abs($0 - $1) <= 1e-6 * scale }, "\(c)")
        } else {
            #expect(y.data == reference, "\(c): \(zip(y.data, reference).filter { $0 != $1 }.count) outputs differ")
        }
    }

    /// Caffe's CPU pooling, loop for loop (`pooling_layer.cpp`): MAX from −FLT_MAX keeping strict
    /// maxima over the window clipped to the image; AVE summing the clipped window and dividing by
    /// the window clipped to the padded image.
    static func caffePooling(_ x: NDArray, kernel: (Int, Int), stride: (Int, Int), pad: (Int, Int), out: (Int, Int), maximum: Bool) -> [Float] {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = [Float]()
        for plane in 0..<(n * c) {
            for oy in 0..<out.0 {
                for ox in 0..<out.1 {
                    var hs = oy * stride.0 - pad.0, ws = ox * stride.1 - pad.1
                    var he = min(hs + kernel.0, h + pad.0), we = min(ws + kernel.1, w + pad.1)
                    let size = Float((he - hs) * (we - ws))
                    hs = max(hs, 0); ws = max(ws, 0); he = min(he, h); we = min(we, w)
                    var value: Float = maximum ? -Float.greatestFiniteMagnitude : 0
                    for iy in hs..<he {
                        for ix in ws..<we {
                            let v = x.data[plane * h * w + iy * w + ix]
                            if maximum { if v > value { value = v } } else { value += v }
                        }
                    }
                    y.append(maximum ? value : value / size)
                }
            }
        }
        return y
    }
}
