import Foundation
import SwiftJIT
import Testing

/// MemoryData from the library: Caffe's `MemoryDataLayer::Reset` batching (consecutive rows,
/// wrapping, n a multiple of the batch size).
@Suite("MemoryDataSource")
struct MemoryDataSourceTests {
    @Test("batches take consecutive rows and wrap; the provider hands them out by top name")
    func batching() throws {
        let data = NDArray(shape: [4, 1, 1, 2], data: (0..<8).map(Float.init))
        let labels = NDArray(shape: [4], data: [10, 11, 12, 13])
        let source = try MemoryDataSource(data: data, labels: labels, batchSize: 2, dataTop: "x", labelTop: "y")
        let provider = source.provider()
        let first = try provider(0), second = try provider(1), third = try provider(2)
        #expect(first["x"]?.shape == [2, 1, 1, 2] && first["x"]?.data == [0, 1, 2, 3] && first["y"]?.data == [10, 11])
        #expect(second["x"]?.data == [4, 5, 6, 7] && second["y"]?.data == [12, 13])
        #expect(third["x"]?.data == [0, 1, 2, 3])
    }

    @Test("a row count that is not a multiple of the batch size, or mismatched labels, is a diagnostic")
    func validation() {
        let data = NDArray(shape: [3, 2], data: [Float](repeating: 0, count: 6))
        #expect(throws: Diagnostic.self) { try MemoryDataSource(data: data, labels: NDArray(shape: [3], data: [0, 0, 0]), batchSize: 2) }
        #expect(throws: Diagnostic.self) { try MemoryDataSource(data: data, labels: NDArray(shape: [2], data: [0, 0]), batchSize: 3) }
    }
}
