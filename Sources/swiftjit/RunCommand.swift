import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit run`: one forward pass through the JIT-compiled net, blobs written to an .npz.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a net forward on inputs from .npy/.npz files and write blobs to an .npz.",
        discussion: """
        Inputs are NumPy files: `--input data=x.npy` feeds one blob (repeat for several, e.g. `--input rois=r.npy`), `--input inputs.npz` feeds every array of the archive by its key. The net is compiled for the inputs' shapes, whatever the prototxt says. Data, ImageData, WindowData, HDF5Data and DenseImageData layers (a train_val net) read their first batch from their sources, found as every command finds them (the working directory, then the prototxt's folder), as `swiftjit test` reads its first iteration; `--input` for all of a layer's tops replaces its source. Without --weights the parameters come from the prototxt's fillers with --seed.

        The output .npz keys are the exact Caffe blob names (`inception_3a/1x1` included). `--blobs all` writes every blob (each keeps its own buffer, as in Caffe); `--blobs a,b` writes those; the default writes the net's outputs.

        `--compare other.npz` compares every written blob with the array of the same name in another framework's dump (reshaped when the element counts agree), in net order, and reports the max absolute and relative difference of each and the first blob whose relative difference exceeds --rtol — where a port of the net starts to go wrong. The exit status is 1 when some blob diverges.
        """
    )

    @Argument(help: "The net definition (.prototxt).")
    var net: String

    @Option(name: .long, help: "The .caffemodel (default: fillers with --seed).")
    var weights: String?

    @Option(name: .long, help: "NAME=file.npy, or an .npz holding every input (repeatable).")
    var input: [String] = []

    @Option(name: .shortAndLong, help: "Where to write the blobs (.npz).")
    var output: String

    @Option(name: .long, help: "Which blobs to write: outputs (default), all, or a comma-separated list.")
    var blobs: String = "outputs"

    @Option(name: .long, help: "The phase to build: test or train.")
    var phase: PhaseOption = .test

    @Option(name: .long, help: "Seed for fillers when no --weights is given.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Compare the written blobs with this .npz (same blob names).")
    var compare: String?

    @Option(name: .long, help: "With --compare: the relative difference (of the blob's largest magnitude) that counts as diverging.")
    var rtol: Float = 1e-4

    @OptionGroup var kernelCache: KernelCacheOptions

    func run() throws {
        do {
            let given = try InputFiles.load(input)
            // Data, ImageData, WindowData, HDF5Data and DenseImageData layers: their sources' first batch, found and
            // shaped by the rule every command shares (DataSources).
            let fed = try DataSources.firstBatch(try CaffeFiles.loadNet(path: net), phase: phase.caffePhase,
                                                 given: given.mapValues { TensorShape($0.shape) })
            let inputs = given.merging(fed.batch) { mine, _ in mine }
            let net = try Net(definition: fed.definition, weights: try weights.map { (try CaffeFiles.loadWeights(path: $0), $0) },
                              phase: phase.caffePhase, inputShapes: inputs.mapValues(\.shape), seed: seed,
                              compiler: Compiler(cache: kernelCache.makeCache()))
            let selection: BlobSelection = blobs == "all" ? .all : blobs == "outputs" ? .outputs
                : .named(blobs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let results = try net.forward(inputs, blobs: selection)
            let order = net.graph.values.map(\.name).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            let entries = order.compactMap { name in results[name].map { (name, $0) } }
            try NumPyFile.write(archive: entries, to: output)
            let detectionTops = Set(net.graph.nodes.filter { $0.kind == .detectionOutput }.flatMap { $0.outputs.map { net.graph.values[$0].name } })
            for (name, array) in entries {
                let finite = array.data.filter(\.isFinite)
                var summary = finite.isEmpty ? "no finite values" :
                    String(format: "min %.6g  max %.6g  mean %.6g", finite.min()!, finite.max()!, finite.reduce(0, +) / Float(finite.count))
                let nans = array.data.filter(\.isNaN).count, infinities = array.data.filter(\.isInfinite).count
                if nans + infinities > 0 { summary += "  (\(nans) NaN, \(infinities) inf)" }
                print("\(name)  \(array.shape.isEmpty ? "scalar" : array.shape.map(String.init).joined(separator: "×"))  \(summary)")
                if detectionTops.contains(name) { printDetections(array) }
            }
            print("wrote \(entries.count) blob\(entries.count == 1 ? "" : "s") to \(output)")
            if let compare {
                let report = try BlobComparison(ours: entries, theirs: try InputFiles.readArchive(compare), rtol: rtol)
                print(report.text(otherName: compare))
                if report.firstDivergence != nil { throw ExitCode(1) }
            }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail(error)
        }
    }
}

/// Blob-by-blob differences between our dump and another framework's, in net order.
struct BlobComparison {
    struct Row {
        var name: String
        var maxAbsolute: Float
        var maxRelative: Float
        var note: String?
    }

    var rows: [Row] = []
    var firstDivergence: String?
    var rtol: Float

    init(ours: [(String, NDArray)], theirs: NPZArchive, rtol: Float) throws {
        self.rtol = rtol
        for (name, mine) in ours {
            guard let other = theirs[name] else {
                rows.append(Row(name: name, maxAbsolute: .nan, maxRelative: .nan, note: "not in the other file"))
                continue
            }
            guard other.count == mine.count else {
                rows.append(Row(name: name, maxAbsolute: .nan, maxRelative: .infinity,
                                note: "shape \(other.shape) vs ours \(mine.shape)"))
                if firstDivergence == nil { firstDivergence = name }
                continue
            }
            let scale = max(other.data.map(abs).max() ?? 0, Float.leastNormalMagnitude)
            let absolute = zip(mine.data, other.data).map { abs($0 - $1) }.max() ?? 0
            let relative = absolute / scale
            rows.append(Row(name: name, maxAbsolute: absolute, maxRelative: relative, note: nil))
            if firstDivergence == nil, !(relative <= rtol) { firstDivergence = name }
        }
    }

    func text(otherName: String) -> String {
        let width = max(4, rows.map(\.name.count).max() ?? 4)
        var lines = ["blob".padding(toLength: width, withPad: " ", startingAt: 0) + "  max |Δ|       max |Δ|/max|other|"]
        for row in rows {
            let flag = row.name == firstDivergence ? "  <- first divergence" : ""
            let values = row.note ?? String(format: "%-12.4g  %.3g", row.maxAbsolute, row.maxRelative)
            lines.append(row.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + values + flag)
        }
        if let first = firstDivergence {
            lines.append("first blob diverging from \(otherName) beyond rtol \(rtol): '\(first)' — check the layer that makes it")
        } else {
            lines.append("all \(rows.count) blobs agree with \(otherName) within rtol \(rtol)")
        }
        return lines.joined(separator: "\n")
    }
}

/// Reads `NAME=file.npy` and `inputs.npz` arguments into arrays by blob name.
enum InputFiles {
    static func load(_ arguments: [String]) throws -> [String: NDArray] {
        var inputs: [String: NDArray] = [:]
        for argument in arguments {
            if let equals = argument.firstIndex(of: "="), argument[argument.index(after: equals)...].hasSuffix(".npy") {
                inputs[String(argument[..<equals])] = try read(String(argument[argument.index(after: equals)...]))
            } else if argument.hasSuffix(".npz") {
                let archive = try readArchive(argument)
                for key in archive.keys { inputs[key] = archive[key] }
            } else {
                throw Diagnostic("--input '\(argument)' is neither NAME=file.npy nor an .npz archive",
                                 hint: "e.g. --input data=image.npy, or --input inputs.npz whose keys are blob names")
            }
        }
        return inputs
    }

    static func read(_ path: String) throws -> NDArray {
        do { return try NumPyFile.readArray(path: path) } catch let error as NumPyError {
            throw Diagnostic(error.description, hint: "inputs are float .npy files (numpy.save) or .npz archives (numpy.savez)")
        }
    }

    static func readArchive(_ path: String) throws -> NPZArchive {
        do { return try NumPyFile.readArchive(path: path) } catch let error as NumPyError {
            throw Diagnostic(error.description, hint: "pass NAME=file.npy for one input, or an .npz whose keys are the input blob names")
        }
    }
}

extension RunCommand {
    /// A DetectionOutput top's rows (`[image, label, score, xmin, ymin, xmax, ymax]`, as many as
    /// this run kept), the first 20 of them, one line each; Caffe's "nothing detected" rows (label
    /// -1) are named as such.
    func printDetections(_ array: NDArray) {
        let rows = array.data.count / 7, shown = min(rows, 20)
        for r in 0..<shown {
            let v = Array(array.data[(r * 7)..<(r * 7 + 7)])
            if v[1] == -1 {
                print("  image \(Int(v[0])): no detection")
            } else {
                print(String(format: "  image %d  label %d  score %.4f  box (%.4f, %.4f)–(%.4f, %.4f)", Int(v[0]), Int(v[1]), v[2], v[3], v[4], v[5], v[6]))
            }
        }
        if rows > shown { print("  … \(rows - shown) more rows in the output file") }
    }
}
