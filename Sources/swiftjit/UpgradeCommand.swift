import ArgumentParser
import Foundation
import SwiftJIT

/// `swiftjit upgrade`: rewrite an old Caffe file in today's format, as Caffe's upgrade_net_proto tools do.
struct UpgradeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade",
        abstract: "Write a V0/V1 net, a legacy solver or a V1 .caffemodel in the current format.",
        discussion: """
        The kind of file is recognised by its content: a binary .caffemodel is upgraded to a binary V2 caffemodel; a prototxt net gets `layer {}` entries and an Input layer instead of input/input_dim; a solver's `solver_type: ADAM` becomes `type: "Adam"`.
        """
    )

    @Argument(help: "The file to upgrade (.prototxt net or solver, or .caffemodel).")
    var input: String

    @Argument(help: "Where to write the upgraded file (written atomically).")
    var output: String

    func run() throws {
        do {
            let notes = try FileUpgrade.upgrade(input: input, output: output)
            for note in notes { print(note) }
            print("wrote \(output)")
        } catch {
            throw fail(error)
        }
    }
}
