import Foundation
import NumPy
import Testing
@testable import Export

/// Weight layouts: permutations, their inverses, and Caffe's input-first deconvolution storage.
@Suite("parameter layouts")
struct WeightLayoutTests {
    /// A Caffe-shaped array whose values are their own flat index.
    static func counting(_ shape: [Int]) -> NDArray {
        NDArray(shape: shape, data: (0..<shape.reduce(1, *)).map(Float.init))
    }

    @Test("hwio puts the kernel axes first and output channels last, as TensorFlow wants")
    func hwio() throws {
        let caffe = Self.counting([4, 3, 2, 5])   // O I H W
        let hwio = try WeightLayout.hwio.arrange(caffe, as: .convolution)
        #expect(hwio.shape == [2, 5, 3, 4])
        // hwio[h, w, i, o] == caffe[o, i, h, w]
        for o in 0..<4 { for i in 0..<3 { for h in 0..<2 { for w in 0..<5 {
            #expect(hwio.data[((h * 5 + w) * 3 + i) * 4 + o] == caffe.data[((o * 3 + i) * 2 + h) * 5 + w])
        } } } }
    }

    @Test("every layout round-trips to Caffe's order", arguments: WeightLayout.allCases)
    func roundTrip(layout: WeightLayout) throws {
        for kind: WeightLayout.WeightKind in [.convolution, .deconvolution(group: 1), .deconvolution(group: 3)] {
            let caffe = Self.counting([6, 4, 3, 2])
            let arranged = try layout.arrange(caffe, as: kind)
            #expect(try layout.restore(arranged, as: kind) == caffe)
        }
        for transposed in [false, true] {
            let caffe = Self.counting([7, 5])
            #expect(try layout.restore(try layout.arrange(caffe, as: .innerProduct(transposed: transposed)),
                                       as: .innerProduct(transposed: transposed)) == caffe)
        }
        let volume = Self.counting([2, 3, 2, 3, 4])
        #expect(try layout.restore(try layout.arrange(volume, as: .convolution), as: .convolution) == volume)
    }

    @Test("a deconvolution's Caffe axis 0 is its input channels: oihw gives num_output × in/group")
    func deconvolution() throws {
        // Caffe: I=6 inputs, group 3, num_output 6 → O/g = 2; stored 6×2×1×1.
        let caffe = Self.counting([6, 2, 1, 1])
        let oihw = try WeightLayout.oihw.arrange(caffe, as: .deconvolution(group: 3))
        #expect(oihw.shape == [6, 2, 1, 1])
        // group g, input i (of 2 per group), output o (of 2 per group): oihw[g*2+o, i] == caffe[g*2+i, o]
        for g in 0..<3 { for i in 0..<2 { for o in 0..<2 {
            #expect(oihw.data[(g * 2 + o) * 2 + i] == caffe.data[(g * 2 + i) * 2 + o])
        } } }
        // With one group Caffe's order is exactly iohw (PyTorch's ConvTranspose layout).
        let single = Self.counting([5, 3, 2, 2])
        #expect(try WeightLayout.iohw.arrange(single, as: .deconvolution(group: 1)) == single)
        #expect(try WeightLayout.oihw.arrange(single, as: .deconvolution(group: 1)).shape == [3, 5, 2, 2])
    }

    @Test("InnerProduct is out×in for oihw/ohwi and in×out for hwio/iohw, whatever Caffe's transpose")
    func innerProduct() throws {
        let caffe = Self.counting([3, 4])   // out × in
        #expect(try WeightLayout.ohwi.arrange(caffe, as: .innerProduct(transposed: false)) == caffe)
        let io = try WeightLayout.hwio.arrange(caffe, as: .innerProduct(transposed: false))
        #expect(io.shape == [4, 3])
        #expect(io.data[1 * 3 + 2] == caffe.data[2 * 4 + 1])
        // transpose: true stores in × out already.
        let stored = Self.counting([4, 3])
        #expect(try WeightLayout.iohw.arrange(stored, as: .innerProduct(transposed: true)) == stored)
        #expect(try WeightLayout.oihw.arrange(stored, as: .innerProduct(transposed: true)).shape == [3, 4])
        #expect(WeightLayout.hwio.axisNames(rank: 2, kind: .innerProduct(transposed: false)) == "io")
        #expect(WeightLayout.ohwi.axisNames(rank: 5, kind: .convolution) == "odhwi")
    }
}
