import CaffeFormat

/// Caffe's `InsertSplits`: a blob read by several layers (or read once and also used as a loss) gets
/// an explicit `Split` layer, so that in backward each reader writes its own gradient and the split
/// sums them.
///
/// Names follow Caffe exactly — layer `{blob}_{producer}_{top}_split`, tops
/// `{blob}_{producer}_{top}_split_{k}` — so blob dumps line up with Caffe's `net.blobs`. An explicit
/// `loss_weight` on a split blob moves to the split's first top, as in Caffe.
enum SplitInsertion {
    private struct TopIndex: Hashable {
        var layer: Int
        var top: Int
    }

    /// The layers with splits inserted, and the positions of the inserted Split layers.
    static func insert(into layers: [(Caffe_LayerParameter, SourcePosition?)]) -> (layers: [(Caffe_LayerParameter, SourcePosition?)], inserted: Set<Int>) {
        var lastTop: [String: TopIndex] = [:]
        var source: [TopIndex: TopIndex] = [:]  // (layer, bottom) -> producing (layer, top)
        var readers: [TopIndex: Int] = [:]
        var lossWeight: [TopIndex: Float] = [:]
        for (i, (layer, _)) in layers.enumerated() {
            for (j, bottom) in layer.bottom.enumerated() {
                // Unknown bottoms are reported by GraphBuilder with a proper message; skip them here.
                guard let producer = lastTop[bottom] else { continue }
                source[TopIndex(layer: i, top: j)] = producer
                readers[producer, default: 0] += 1
            }
            for (j, top) in layer.top.enumerated() { lastTop[top] = TopIndex(layer: i, top: j) }
            for j in 0..<min(layer.lossWeight.count, layer.top.count) {
                let index = TopIndex(layer: i, top: j)
                lossWeight[index] = layer.lossWeight[j]
                if layer.lossWeight[j] != 0 { readers[index, default: 0] += 1 }
            }
        }
        var nextSplit: [TopIndex: Int] = [:]
        var result: [(Caffe_LayerParameter, SourcePosition?)] = []
        var inserted = Set<Int>()
        for (i, (original, location)) in layers.enumerated() {
            var layer = original
            for j in layer.bottom.indices {
                guard let producer = source[TopIndex(layer: i, top: j)], readers[producer, default: 0] > 1 else { continue }
                let producerName = layers[producer.layer].0.name
                let k = nextSplit[producer, default: 0]
                nextSplit[producer] = k + 1
                layer.bottom[j] = splitBlobName(layer: producerName, blob: layer.bottom[j], top: producer.top, index: k)
            }
            var splits: [Caffe_LayerParameter] = []
            for (j, top) in layer.top.enumerated() {
                let index = TopIndex(layer: i, top: j)
                let count = readers[index, default: 0]
                guard count > 1 else { continue }
                let weight = lossWeight[index, default: 0]
                var split = Caffe_LayerParameter()
                split.name = "\(top)_\(layer.name)_\(j)_split"
                split.type = "Split"
                split.bottom = [top]
                split.top = (0..<count).map { splitBlobName(layer: layer.name, blob: top, top: j, index: $0) }
                if weight != 0 {
                    split.lossWeight = [weight] + Array(repeating: 0, count: count - 1)
                    layer.lossWeight = []
                    nextSplit[index, default: 0] += 1
                }
                splits.append(split)
            }
            result.append((layer, location))
            for split in splits {
                inserted.insert(result.count)
                result.append((split, location))
            }
        }
        return (result, inserted)
    }

    static func splitBlobName(layer: String, blob: String, top: Int, index: Int) -> String {
        "\(blob)_\(layer)_\(top)_split_\(index)"
    }
}
