import DataPipeline
import Foundation

/// The one rule every command (`compile`, `init`, `export`, `run`, `time`, `train`, `test`) uses
/// for where a data layer's `source` (Data, ImageData, WindowData, HDF5Data; and its `mean_file`)
/// is found and how the layer's top shapes are learned.
///
/// Where: an absolute path is used as written. A relative one resolves against the working
/// directory first — where Caffe opens it, so nets written for `caffe train` run from Caffe's
/// root keep working — and, when it is not there, against the folder of the prototxt that defines
/// the layer (for a net inlined in a solver, the solver's folder), so a net and its LMDB copied
/// together work from anywhere. When it is in neither, errors name the working-directory path.
///
/// Shapes: from the first record of the LMDB, as Caffe's `DataLayerSetUp` (batch, channels and
/// the image size after cropping; the label top is `[batch]`). A shape given with `--input`
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
    static let fileLayerTypes: Set<String> = ["Data", "ImageData", "WindowData", "HDF5Data", "DenseImageData"]

    /// The label top's shape for a data layer whose images are `batchShape`: one label per item,
    /// or for DenseImageData one label image per item, N×1×H×W.
    static func labelShape(_ layer: Caffe_LayerParameter, batchShape: [Int]) -> [Int] {
        layer.type == "DenseImageData" ? [batchShape[0], 1, batchShape[2], batchShape[3]] : [batchShape[0]]
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
                if layer.top.count > 1 { shapes[layer.top[1]] = TensorShape(labelShape(layer, batchShape: feed.batchShape)) }
            } catch {
                if required { throw error }
                let reason = (error as? Diagnostic)?.message ?? "\(error)"
                notes.append("\(layer.type) layer '\(layer.name)': \(reason); its shape stays '?' (give it with --input \(data)=N,C,H,W)")
            }
        }
        return (shapes, notes)
    }
}
