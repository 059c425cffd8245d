import ArgumentParser
import Foundation
import SwiftJIT

/// The `swiftjit` command line: one subcommand per job, Caffe's tools as the model.
@main
struct SwiftJITCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftjit",
        abstract: "A Caffe-compatible deep-learning runtime: read Caffe nets and weights, explain them, run them.",
        discussion: """
        Examples:
          swiftjit compile Examples/lenet/lenet.prototxt
          swiftjit compile deploy.prototxt --weights net.caffemodel --input data=1,3,224,224
          swiftjit compile train_val.prototxt --phase train --json
          swiftjit upgrade old_v1.prototxt new.prototxt
          swiftjit export deploy.prototxt --weights net.caffemodel --layout hwio --output params.npz --onnx net.onnx
          swiftjit draw deploy.prototxt --output net.svg
          swiftjit init deploy.prototxt --seed 7 -o random.caffemodel
          swiftjit serve --model-repository models/ --http-port 8000
        """,
        subcommands: [CompileCommand.self, RunCommand.self, ServeCommand.self, TimeCommand.self, TrainCommand.self, TestCommand.self, InitCommand.self, UpgradeCommand.self, ExportCommand.self, DrawCommand.self,
                      ConvertImagesetCommand.self, ComputeImageMeanCommand.self, ExtractFeaturesCommand.self]
    )
}

/// Prints a diagnostic the way compilers do and exits non-zero.
func fail(_ error: Error) -> ExitCode {
    let text = (error as? Diagnostic)?.description ?? "\(error)"
    FileHandle.standardError.write(Data(("error: " + text + "\n").utf8))
    return ExitCode(1)
}
