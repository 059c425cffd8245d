import DataPipeline
import Foundation

/// Produces, each iteration, the values of every data-source top of a net: `Data` layers from their
/// LMDB or LevelDB and `ImageData` layers from their image lists (both prefetched), `HDF5Data` from
/// its .h5 files, `DummyData` from its fillers (refilled every pass unless all are constant, as
/// Caffe), and `Input`/`MemoryData` tops from a caller-supplied provider (the library API).
public final class TrainingFeeds {
    /// Supplies `Input`/`MemoryData` tops for one pass, by blob name.
    public typealias Provider = (_ pass: Int) throws -> [String: NDArray]

    private var dataFeeds: [(feed: DataLayerFeed, data: String, label: String?, labelShape: [Int])] = []
    private var hdf5Feeds: [(reader: HDF5DataReader, tops: [String], layer: String)] = []
    private var dummies: [(name: String, shape: [Int], filler: Filler, constant: NDArray?)] = []
    private var generator: SeededGenerator
    private let provider: Provider?
    private let providedNames: [String]
    private var pass = 0

    /// Feeds for the data-source layers of `graph`; relative LMDB paths resolve against
    /// `baseDirectory` when given, otherwise by `DataSources`' rule (the working directory, then
    /// the folder of `netFile`, the prototxt defining the net).
    ///
    /// With `dataInPlace`, Input, MemoryData and DummyData tops are left to the net, which holds
    /// what its caller wrote (pycaffe's solver nets); only Data layers are fed.
    public init(graph: Graph, seed: UInt64, baseDirectory: String?, netFile: String? = nil, provider: Provider? = nil, dataInPlace: Bool = false) throws {
        generator = SeededGenerator(seed: seed, stream: "dummy-data")
        self.provider = provider
        var provided: [String] = []
        for node in graph.nodes where node.kind.isDataSource {
            if dataInPlace, [.input, .memoryData, .dummyData].contains(node.kind) { continue }
            let tops = node.outputs.map { graph.values[$0] }
            switch node.kind {
            case .data, .imageData, .windowData, .denseImageData, .annotatedData:
                let feed = try DataLayerFeed(layer: node.layer, phase: graph.phase, seed: UInt32(truncatingIfNeeded: seed),
                                             baseDirectory: baseDirectory ?? netFile.flatMap { DataSources.baseDirectory(for: node.layer, netFile: $0) })
                dataFeeds.append((feed, tops[0].name, tops.count > 1 ? tops[1].name : nil, tops.count > 1 ? tops[1].shape.dims : []))
            case .hdf5Data:
                let reader = try HDF5DataReader(layer: node.layer, seed: UInt32(truncatingIfNeeded: seed),
                                                baseDirectory: baseDirectory ?? netFile.flatMap { DataSources.baseDirectory(for: node.layer, netFile: $0) })
                hdf5Feeds.append((reader, tops.map(\.name), node.name))
            case .dummyData:
                let fillers = node.layer.dummyDataParam.dataFiller
                for (index, top) in tops.enumerated() {
                    let parameter = fillers.isEmpty ? Filler.constant(0).parameter : fillers[fillers.count == 1 ? 0 : index]
                    let filler = Filler(parameter)
                    var constant: NDArray?
                    if parameter.type == "constant" {
                        constant = NDArray(shape: top.shape.dims, data: try filler.fill(shape: top.shape.dims, generator: &generator))
                    }
                    dummies.append((top.name, top.shape.dims, filler, constant))
                }
            case .input, .memoryData:
                guard provider != nil else {
                    throw Diagnostic("\(node.kind.rawValue) layer tops (\(tops.map(\.name).joined(separator: ", "))) need values while training, and nothing provides them",
                                     layer: node.name, hint: "train from an LMDB with a Data layer, or feed these tops through the library's TrainingFeeds provider")
                }
                provided += tops.map(\.name)
            default:
                throw Diagnostic("\(node.kind.rawValue) layers cannot feed training yet", layer: node.name,
                                 hint: "convert the dataset to an LMDB of Caffe Datums and use a Data layer")
            }
        }
        providedNames = provided
    }

    /// The shapes of the Data, ImageData, WindowData and HDF5Data layers' tops in `definition` for
    /// a net state, read from each LMDB's first record, list's first image or first .h5 file as
    /// Caffe's `DataLayerSetUp` does (a missing source is reported here, in one line). Relative
    /// sources resolve against `baseDirectory` when given, otherwise by `DataSources`' rule.
    public static func dataShapes(_ definition: NetDefinition, phase: Caffe_Phase, level: Int32, stages: [String],
                                  baseDirectory: String?) throws -> [String: TensorShape] {
        guard let baseDirectory else {
            return try DataSources.shapes(definition, phase: phase, level: level, stages: stages, required: true).shapes
        }
        let filter = NetFilter(net: definition.net, phase: phase, level: level, stages: stages)
        var shapes: [String: TensorShape] = [:]
        for layer in definition.net.layer where layer.type == "HDF5Data" && filter.includes(layer) {
            let reader = try HDF5DataReader(layer: layer, seed: 0, baseDirectory: baseDirectory)
            for (top, shape) in zip(layer.top, reader.batchShapes) { shapes[top] = TensorShape(shape) }
        }
        for layer in definition.net.layer where ["Data", "ImageData", "WindowData", "DenseImageData", "AnnotatedData"].contains(layer.type) && filter.includes(layer) {
            let feed = try DataLayerFeed(layer: layer, phase: phase, baseDirectory: baseDirectory, prefetch: 0)
            defer { feed.close() }
            if let data = layer.top.first { shapes[data] = TensorShape(feed.batchShape) }
            if layer.top.count > 1 { shapes[layer.top[1]] = TensorShape(DataSources.labelShape(layer, batchShape: feed.batchShape, annotatedRows: feed.annotatedLabelRows)) }
        }
        return shapes
    }

    /// The values of every data-source top for the next pass.
    public func next() throws -> [String: NDArray] {
        defer { pass += 1 }
        var feeds: [String: NDArray] = [:]
        for entry in dataFeeds {
            let batch = try entry.feed.next()
            feeds[entry.data] = NDArray(shape: batch.shape, data: batch.data)
            if let label = entry.label {
                feeds[label] = NDArray(shape: entry.labelShape.reduce(1, *) == batch.labels.count ? entry.labelShape : [batch.labels.count], data: batch.labels)
            }
        }
        for entry in hdf5Feeds {
            do {
                for (top, array) in zip(entry.tops, try entry.reader.next()) { feeds[top] = NDArray(shape: array.shape, data: array.values) }
            } catch let diagnostic as Diagnostic {
                throw diagnostic.inLayer(entry.layer)
            }
        }
        for dummy in dummies {
            feeds[dummy.name] = try dummy.constant ?? NDArray(shape: dummy.shape, data: dummy.filler.fill(shape: dummy.shape, generator: &generator))
        }
        if let provider {
            let given = try provider(pass)
            for name in providedNames {
                guard let value = given[name] else {
                    throw Diagnostic("the training feed provider gave no value for '\(name)' (pass \(pass))")
                }
                feeds[name] = value
            }
        }
        return feeds
    }

    /// Stops prefetch threads.
    public func close() {
        for entry in dataFeeds { entry.feed.close() }
    }

    deinit { close() }
}
