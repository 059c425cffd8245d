import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit run`: one forward pass through the JIT-compiled net, blobs written to an .npz.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a net forward on inputs from .npy/.npz files and write blobs to an .npz.",
        discussion: """
        Inputs are NumPy files: `--input data=x.npy` feeds one blob (repeat for several, e.g. `--input rois=r.npy`), `--input inputs.npz` feeds every array of the archive by its key. The net is compiled for the inputs' shapes, whatever the prototxt says. Without --weights the parameters come from the prototxt's fillers with --seed.

        The output .npz keys are the exact Caffe blob names (`inception_3a/1x1` included). `--blobs all` writes every blob (each keeps its own buffer, as in Caffe); `--blobs a,b` writes those; the default writes the net's outputs.
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

    func run() throws {
        do {
            let inputs = try InputFiles.load(input)
            let net = try Net(prototxt: net, weights: weights, phase: phase.caffePhase, inputShapes: inputs.mapValues(\.shape), seed: seed)
            let selection: BlobSelection = blobs == "all" ? .all : blobs == "outputs" ? .outputs
                : .named(blobs.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let results = try net.forward(inputs, blobs: selection)
            let order = net.graph.values.map(\.name).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            let entries = order.compactMap { name in results[name].map { (name, $0) } }
            try NumPyFile.write(archive: entries, to: output)
            for (name, array) in entries {
                let finite = array.data.filter(\.isFinite)
                let summary = finite.isEmpty ? "no finite values" :
                    String(format: "min %.6g  max %.6g  mean %.6g", finite.min()!, finite.max()!, finite.reduce(0, +) / Float(finite.count))
                print("\(name)  \(array.shape.isEmpty ? "scalar" : array.shape.map(String.init).joined(separator: "×"))  \(summary)")
            }
            print("wrote \(entries.count) blob\(entries.count == 1 ? "" : "s") to \(output)")
        } catch {
            throw fail(error)
        }
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
