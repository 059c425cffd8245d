import CaffeFormat
import Graph
import Testing

/// The one `param_str` reader behind the Python layers SwiftJIT runs natively.
@Suite("param_str")
struct ParamStringTests {
    @Test("ENet's Python dict and py-faster-rcnn's YAML read alike: braces optional, quotes stripped, lists and !!python/tuple")
    func forms() throws {
        #expect(try ParamString.entries("{'phase': 'TRAIN', 'p': '0.01'}") == ["phase": ["TRAIN"], "p": ["0.01"]])
        #expect(try ParamString.entries("\"phase\": TEST, p: 0.2") == ["phase": ["TEST"], "p": ["0.2"]])
        #expect(try ParamString.numbers("'feat_stride': 16") == ["feat_stride": [16]])
        #expect(try ParamString.numbers("{'feat_stride': 16, 'scales': !!python/tuple [4, 8, 16]}") == ["feat_stride": [16], "scales": [4, 8, 16]])
        #expect(try ParamString.numbers("'feat_stride': 16\n'ratios': (0.5, 1, 2)") == ["feat_stride": [16], "ratios": [0.5, 1, 2]])
        #expect(try ParamString.entries("  ") == [:])
    }

    @Test("malformed param_str gives one clear message", arguments: [
        ("{'p': 0.1", "opens '{' but does not close it"),
        ("'p' 0.1", "is not 'key: value'"),
        ("'scales': [8, 16", "is not a closed list"),
        ("'p': 0.1, 'p': 0.2", "gives 'p' twice"),
        ("'p': ", "value for 'p' is empty"),
    ])
    func malformed(text: String, message: String) {
        #expect { _ = try ParamString.entries(text) } throws: { "\($0)".contains(message) }
    }

    @Test("numbers refuses a word, naming the key")
    func notANumber() {
        #expect { _ = try ParamString.numbers("'feat_stride': sixteen") } throws: {
            "\($0)".contains("param_str value for 'feat_stride' must be a number or a list of numbers, got \"sixteen\"")
        }
    }
}
