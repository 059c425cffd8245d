import Foundation

/// Arrays held in memory that feed a `MemoryData` layer's two tops, as Caffe's
/// `MemoryDataLayer::Reset(data, labels, n)` does: each pass takes the next `batch_size` rows,
/// wrapping to the first after the last; `n` must be a multiple of the batch size.
///
/// Give one to training through `TrainingOptions.provider` (or combine several):
///
///     let source = try MemoryDataSource(data: images, labels: labels, batchSize: 64,
///                                       dataTop: "data", labelTop: "label")
///     var options = TrainingOptions()
///     options.provider = source.provider()
///
/// Values are used as given (Caffe's `Reset` path applies no transformer). Not thread-safe.
public final class MemoryDataSource {
    public let data: NDArray
    public let labels: NDArray
    public let batchSize: Int
    public let dataTop: String
    public let labelTop: String?
    private var position = 0

    /// `data` is shaped `[N, ...]` and `labels` `[N]` (or `[N, 1, 1, 1]`).
    public init(data: NDArray, labels: NDArray, batchSize: Int, dataTop: String = "data", labelTop: String? = "label") throws {
        guard let rows = data.shape.first, rows > 0 else {
            throw Diagnostic("MemoryData needs at least one row of data (got shape \(data.shape))")
        }
        guard batchSize > 0, rows % batchSize == 0 else {
            throw Diagnostic("MemoryData has \(rows) rows, which is not a multiple of batch_size \(batchSize)",
                             hint: "Caffe's MemoryDataLayer::Reset needs n % batch_size == 0; drop or repeat rows")
        }
        guard labels.data.count == rows else {
            throw Diagnostic("MemoryData has \(rows) rows of data but \(labels.data.count) labels")
        }
        self.data = data
        self.labels = labels
        self.batchSize = batchSize
        self.dataTop = dataTop
        self.labelTop = labelTop
    }

    /// The next batch of both tops, by top name.
    public func next() -> [String: NDArray] {
        let rows = data.shape[0]
        let width = data.data.count / rows
        let start = position
        position = (position + batchSize) % rows
        var out = [dataTop: NDArray(shape: [batchSize] + data.shape.dropFirst(),
                                    data: Array(data.data[(start * width)..<((start + batchSize) * width)]))]
        if let labelTop { out[labelTop] = NDArray(shape: [batchSize], data: Array(labels.data[start..<(start + batchSize)])) }
        return out
    }

    /// A training provider that returns this source's next batch every pass.
    public func provider() -> TrainingFeeds.Provider {
        { _ in self.next() }
    }
}
