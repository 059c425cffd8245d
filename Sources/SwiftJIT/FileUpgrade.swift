import Foundation

/// Rewrites a Caffe file in the current format: the work behind `swiftjit upgrade`.
///
/// Binary files (`.caffemodel`) are recognised by content, not by name: anything that is not valid
/// UTF-8 text is read as a binary NetParameter. Text is a solver when its top-level fields are
/// solver fields (`base_lr`, `net`, ...), otherwise a net.
public enum FileUpgrade {
    /// Upgrades `input` into `output` and returns what changed, one line per upgrade.
    public static func upgrade(input: String, output: String) throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: input))
        if let text = String(data: data, encoding: .utf8), !data.contains(0) {
            if isSolver(text) {
                let solver = try CaffeFiles.parseSolver(text: text, file: input)
                try CaffeFiles.write(text: CaffeFiles.prototxt(solver), to: output)
                return ["solver upgraded (solver_type enums become the type string)"]
            }
            let definition = try CaffeFiles.parseNet(text: text, file: input)
            try CaffeFiles.write(text: CaffeFiles.prototxt(definition.net), to: output)
            return definition.upgradeNotes.isEmpty ? ["already in the current format; rewritten unchanged"] : definition.upgradeNotes
        }
        let net = try CaffeFiles.loadWeights(path: input)
        try CaffeFiles.write(net, to: output)
        return ["caffemodel upgraded: \(net.layer.count) layers in the current format"]
    }

    /// True when the text's top-level field names belong to SolverParameter rather than NetParameter.
    static func isSolver(_ text: String) -> Bool {
        var parser = PrototxtParser(text: text, file: "")
        guard let tree = try? parser.parseDocument() else { return false }
        let net = ProtoSchema.caffe.messages["caffe.NetParameter"]
        let solver = ProtoSchema.caffe.messages["caffe.SolverParameter"]
        let names = tree.fields.map(\.name)
        let solverOnly = names.filter { solver?.field(named: $0) != nil && net?.field(named: $0) == nil }
        let netOnly = names.filter { net?.field(named: $0) != nil && solver?.field(named: $0) == nil }
        return solverOnly.count > netOnly.count
    }
}
