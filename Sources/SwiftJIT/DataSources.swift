import DataPipeline
import Foundation

/// The one rule every command (`compile`, `init`, `export`, `run`, `time`, `train`, `test`) uses
/// for where a `Data` layer's `source` (and its `mean_file`) is found and how the layer's top
/// shapes are learned.
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
        let source = layer.dataParam.source
        if source.hasPrefix("/") { return nil }
        let workingDirectory = FileManager.default.currentDirectoryPath
        let netFolder = URL(fileURLWithPath: netFile).deletingLastPathComponent().path
        for folder in [workingDirectory, netFolder] where FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent(source)) {
            return folder
        }
        return workingDirectory
    }

    /// The tops' shapes of `definition`'s Data layers in one net state, read from their LMDBs
    /// unless `given` has them. With `required`, an LMDB that cannot be read throws; otherwise its
    /// layer is left out and a note says why (and how to give the shape).
    public static func shapes(_ definition: NetDefinition, phase: Caffe_Phase, level: Int32 = 0, stages: [String] = [],
                              given: [String: TensorShape] = [:], required: Bool) throws -> (shapes: [String: TensorShape], notes: [String]) {
        let filter = NetFilter(net: definition.net, phase: phase, level: level, stages: stages)
        var shapes: [String: TensorShape] = [:]
        var notes: [String] = []
        for layer in definition.net.layer where layer.type == "Data" && filter.includes(layer) {
            guard let data = layer.top.first, given[data] == nil else { continue }
            let base = baseDirectory(for: layer, netFile: definition.file)
            let source = base.map { ($0 as NSString).appendingPathComponent(layer.dataParam.source) } ?? layer.dataParam.source
            if !required, !FileManager.default.fileExists(atPath: source) {
                let netFolder = URL(fileURLWithPath: definition.file).deletingLastPathComponent().path
                notes.append("Data layer '\(layer.name)': its LMDB '\(layer.dataParam.source)' is not on this machine (looked in the working directory and in \(netFolder)), so its image size is '?' (give it with --input \(data)=N,C,H,W)")
                continue
            }
            do {
                let feed = try DataLayerFeed(layer: layer, phase: phase, baseDirectory: base, prefetch: 0)
                defer { feed.close() }
                shapes[data] = TensorShape(feed.batchShape)
                if layer.top.count > 1 { shapes[layer.top[1]] = TensorShape([feed.batchShape[0]]) }
            } catch {
                if required { throw error }
                let reason = (error as? Diagnostic)?.message ?? "\(error)"
                notes.append("Data layer '\(layer.name)': \(reason); its image size stays '?' (give it with --input \(data)=N,C,H,W)")
            }
        }
        return (shapes, notes)
    }
}
