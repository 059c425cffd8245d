import DataPipeline
import Foundation

/// The one rule every command (`compile`, `init`, `export`, `run`, `time`, `train`, `test`) uses
/// for where a data layer's `source` (Data, ImageData, WindowData, HDF5Data, DenseImageData; and
/// its `mean_file`) is found and how the layer's top shapes are learned.
///
/// Where: an absolute path is used as written. A relative one resolves against the working
/// directory first — where Caffe opens it, so nets written for `caffe train` run from Caffe's
/// root keep working — and, when it is not there, against the folder of the prototxt that defines
/// the layer (for a net inlined in a solver, the solver's folder), so a net and its LMDB copied
/// together work from anywhere. When it is in neither, errors name the working-directory path.
///
/// Shapes: from the first record of the LMDB (or the first image of an ImageData or
/// DenseImageData list), as Caffe's `DataLayerSetUp` (batch, channels and the image size after
/// resizing and cropping; the label top is `[batch]`, for DenseImageData the label image
/// `batch × 1 × H × W`). A shape given with `--input`
/// wins and the LMDB is then not opened. Commands that only inspect or convert a net (`compile`,
/// `init`, `export`, `time`) go on without an LMDB that cannot be read, leaving the extents `?`
/// with a note saying why; commands that read the data (`train`, `test`) stop with the error.
///
///     let (shapes, notes) = try DataSources.shapes(definition, phase: .test, required: false)
public enum DataSources {
    /// The folder `layer`'s relative `source` resolves against (see the type's rule); `nil` for
    /// an absolute source.
    public static func baseDirectory(for layer: Caffe_LayerParameter, netFile: String) -> String? {
        let source = Self.source(of: layer)
        if source.hasPrefix("/") { return nil }
        let workingDirectory = FileManager.default.currentDirectoryPath
        let netFolder = URL(fileURLWithPath: netFile).deletingLastPathComponent().path
        for folder in [workingDirectory, netFolder] where FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent(source)) {
            return folder
        }
        return workingDirectory
    }

    /// The `source` field of a data layer of any of the types that read files.
    static func source(of layer: Caffe_LayerParameter) -> String {
        switch layer.type {
        case "ImageData": return layer.imageDataParam.source
        case "WindowData": return layer.windowDataParam.source
        case "HDF5Data": return layer.hdf5DataParam.source
        case "DenseImageData": return layer.denseImageDataParam.source
        default: return layer.dataParam.source
        }
    }

    /// The layer types whose top shapes come from their files.
    static let fileLayerTypes: Set<String> = ["Data", "ImageData", "WindowData", "HDF5Data", "DenseImageData", "AnnotatedData"]

    /// The label top's shape for a data layer whose images are `batchShape`: one label per item,
    /// or for DenseImageData one label image per item, N×1×H×W (N×1×⌊H/f⌋×⌊W/f⌋ with ENet's
    /// `label_divide_factor` f, which the layer's reader has checked).
    /// An SSD AnnotatedData layer's label top is `1×1×rows×8` box rows (`annotatedRows`, padded).
    static func labelShape(_ layer: Caffe_LayerParameter, batchShape: [Int], annotatedRows: Int? = nil) -> [Int] {
        if layer.type == "AnnotatedData" { return [1, 1, annotatedRows ?? 1, 8] }
        guard layer.type == "DenseImageData" else { return [batchShape[0]] }
        let factor = max(1, Int(layer.denseImageDataParam.labelDivideFactor))
        return [batchShape[0], 1, batchShape[2] / factor, batchShape[3] / factor]
    }

    /// The tops' shapes of `definition`'s Data layers in one net state, read from their LMDBs
    /// unless `given` has them. With `required`, an LMDB that cannot be read throws; otherwise its
    /// layer is left out and a note says why (and how to give the shape).
    public static func shapes(_ definition: NetDefinition, phase: Caffe_Phase, level: Int32 = 0, stages: [String] = [],
                              given: [String: TensorShape] = [:], required: Bool) throws -> (shapes: [String: TensorShape], notes: [String]) {
        let filter = NetFilter(net: definition.net, phase: phase, level: level, stages: stages)
        var shapes: [String: TensorShape] = [:]
        var notes: [String] = []
        for layer in definition.net.layer where fileLayerTypes.contains(layer.type) && filter.includes(layer) {
            guard let data = layer.top.first, given[data] == nil else { continue }
            let base = baseDirectory(for: layer, netFile: definition.file)
            let written = source(of: layer)
            let path = base.map { ($0 as NSString).appendingPathComponent(written) } ?? written
            if !required, !FileManager.default.fileExists(atPath: path) {
                let netFolder = URL(fileURLWithPath: definition.file).deletingLastPathComponent().path
                notes.append("\(layer.type) layer '\(layer.name)': its source '\(written)' is not on this machine (looked in the working directory and in \(netFolder)), so its shape is '?' (give it with --input \(data)=N,C,H,W)")
                continue
            }
            do {
                if layer.type == "HDF5Data" {
                    let reader = try HDF5DataReader(layer: layer, seed: 0, baseDirectory: base)
                    for (top, shape) in zip(layer.top, reader.batchShapes) { shapes[top] = TensorShape(shape) }
                    continue
                }
                let feed = try DataLayerFeed(layer: layer, phase: phase, baseDirectory: base, prefetch: 0)
                defer { feed.close() }
                shapes[data] = TensorShape(feed.batchShape)
                if layer.top.count > 1 { shapes[layer.top[1]] = TensorShape(labelShape(layer, batchShape: feed.batchShape, annotatedRows: feed.annotatedLabelRows)) }
            } catch {
                if required { throw error }
                let reason = (error as? Diagnostic)?.message ?? "\(error)"
                notes.append("\(layer.type) layer '\(layer.name)': \(reason); its shape stays '?' (give it with --input \(data)=N,C,H,W)")
            }
        }
        return (shapes, notes)
    }
}

extension DataSources {
    /// A net whose file data layers (Data, ImageData, WindowData, HDF5Data, DenseImageData) are fed once, for a
    /// single forward pass (`swiftjit run`), and the values that feed them.
    public struct FirstBatch {
        /// `definition` with each file data layer of the net state replaced by an `Input` layer of
        /// the same name and tops, shaped as the type's rule learns (or as `given` says).
        public var definition: NetDefinition
        /// One batch of every replaced top not in `given`, read from its source through the same
        /// feeds as `swiftjit test` (transform_param applied), by blob name.
        public var batch: [String: NDArray]
    }

    /// Turns `definition`'s file data layers into `Input` layers fed from their sources' first
    /// batch, so a net written for `caffe test` runs forward (`swiftjit run`) as `test` would run
    /// its first iteration. Sources resolve and shapes are learned by the type's rule; a layer
    /// whose every top is in `given` (`--input`) is not opened. A source that cannot be read
    /// throws, as for `train` and `test`. A net without file data layers comes back unchanged.
    public static func firstBatch(_ definition: NetDefinition, phase: Caffe_Phase, given: [String: TensorShape]) throws -> FirstBatch {
        let state = definition.net.state
        let filter = NetFilter(net: definition.net, phase: phase, level: state.level, stages: state.stage)
        let fileLayers = definition.net.layer.indices.filter { index in
            fileLayerTypes.contains(definition.net.layer[index].type) && filter.includes(definition.net.layer[index])
        }
        guard !fileLayers.isEmpty else { return FirstBatch(definition: definition, batch: [:]) }
        var reading = definition
        reading.net.layer = definition.net.layer.enumerated().compactMap { index, layer in
            // Only the layers whose tops are not all given are read.
            !fileLayers.contains(index) || !layer.top.allSatisfy({ given[$0] != nil }) ? layer : nil
        }
        var batch: [String: NDArray] = [:]
        var shapes = given
        if reading.net.layer.contains(where: { fileLayerTypes.contains($0.type) && filter.includes($0) }) {
            let learned = try DataSources.shapes(reading, phase: phase, level: state.level, stages: state.stage,
                                                 given: given, required: true).shapes
            shapes.merge(learned) { mine, _ in mine }
            // A graph of the data layers alone: the feeds need nothing else.
            var feedsOnly = reading
            feedsOnly.net.layer = reading.net.layer.filter { fileLayerTypes.contains($0.type) }
            feedsOnly.layerLocations = []
            let graph = try GraphBuilder(phase: phase, inputShapes: shapes, insertsSplits: false).build(feedsOnly)
            let feeds = try TrainingFeeds(graph: graph, seed: 1, baseDirectory: nil, netFile: definition.file, dataInPlace: true)
            defer { feeds.close() }
            batch = try feeds.next().filter { given[$0.key] == nil }
            for (name, array) in batch { shapes[name] = shapes[name] ?? TensorShape(array.shape) }
        }
        return FirstBatch(definition: try replacingFileLayers(definition, phase: phase, shapes: shapes), batch: batch)
    }

    /// `definition` with each file data layer of the net state replaced by an `Input` layer of the
    /// same name and tops shaped as `shapes` says (what `swiftjit time` times: the net behind its
    /// data layers, fed random values). A top whose shape is not known throws, naming the `--input`
    /// that gives it (`--input top=<inputForm>`).
    public static func replacingFileLayers(_ definition: NetDefinition, phase: Caffe_Phase, shapes: [String: TensorShape],
                                           inputForm: String = "FILE.npy") throws -> NetDefinition {
        let state = definition.net.state
        let filter = NetFilter(net: definition.net, phase: phase, level: state.level, stages: state.stage)
        var fed = definition
        for (index, layer) in definition.net.layer.enumerated() where fileLayerTypes.contains(layer.type) && filter.includes(layer) {
            var input = Caffe_LayerParameter()
            input.name = layer.name
            input.type = "Input"
            input.top = layer.top
            input.include = layer.include
            input.exclude = layer.exclude
            for top in layer.top {
                guard let shape = shapes[top], shape.isFullyKnown else {
                    throw Diagnostic("\(layer.type) layer '\(layer.name)': the shape of its top '\(top)' is not known", layer: layer.name,
                                     hint: "give it with --input \(top)=\(inputForm)")
                }
                var blob = Caffe_BlobShape()
                blob.dim = shape.dims.map(Int64.init)
                input.inputParam.shape.append(blob)
            }
            fed.net.layer[index] = input
        }
        return fed
    }
}
