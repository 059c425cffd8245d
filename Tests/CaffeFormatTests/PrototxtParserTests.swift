import Testing
@testable import CaffeFormat

/// The prototxt reader: what it accepts (everything protobuf's text format allows in Caffe files)
/// and how it reports mistakes (file:line:column, the layer, a did-you-mean).
@Suite("prototxt reading")
struct PrototxtParserTests {
    func error(_ text: String, file: String = "net.prototxt") -> String {
        do {
            _ = try CaffeFiles.parseNet(text: text, file: file)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test("reads layers, lists, comments, both string quotes, colon before brace and separators")
    func acceptsTextFormatVariants() throws {
        let text = """
        name: 'tiny'  # a comment
        layer { name: "data" type: "Input" top: "data"
                input_param: { shape: { dim: [1, 3, 8, 8] } } }
        layer < name: "conv" type: "Convolution" bottom: "data" top: "conv";
                convolution_param { num_output: 4 kernel_size: 3 pad: 0x1 weight_filler { type: "xavier" std: 1e-2 } } >
        layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        """
        let definition = try CaffeFiles.parseNet(text: text, file: "tiny.prototxt")
        #expect(definition.net.name == "tiny")
        #expect(definition.net.layer.count == 3)
        #expect(definition.net.layer[0].inputParam.shape[0].dim == [1, 3, 8, 8])
        #expect(definition.net.layer[1].convolutionParam.pad == [1])
        #expect(definition.net.layer[1].convolutionParam.weightFiller.std == 0.01)
        #expect(definition.net.layer[2].poolingParam.pool == .max)
        #expect(definition.layerLocations.map { $0?.line } == [2, 4, 6])
    }

    @Test("an unknown field names file, line:column, layer and the closest field")
    func unknownFieldDidYouMean() {
        let text = """
        layer {
          name: "conv1"
          type: "Convolution"
          convolution_param {
            num_output: 20
            kernal_size: 5
          }
        }
        """
        #expect(error(text) == "net.prototxt:6:5: layer 'conv1': caffe.ConvolutionParameter has no field 'kernal_size' — did you mean 'kernel_size'?")
    }

    @Test("an unknown enum value lists the valid ones")
    func unknownEnumValue() {
        let text = "layer { name: \"p\" type: \"Pooling\" pooling_param { pool: MAXIMUM } }"
        #expect(error(text) == "net.prototxt:1:57: layer 'p': 'MAXIMUM' is not a value of caffe.PoolingParameter.PoolMethod — did you mean 'MAX'?\n  hint: one of: MAX, AVE, STOCHASTIC")
    }

    @Test("syntax errors point at the token")
    func syntaxErrors() {
        #expect(error("layer { name: \"a\" ") == "net.prototxt:1:19: expected '}' to close 'layer' opened at 1:7, found the end of the file\n  hint: a '}' is missing; count the braces from line 1")
        #expect(error("layer { name \"a\" }") == "net.prototxt:1:14: expected ':' or '{' after field name 'name', found '\"'")
        #expect(error("name: \"unterminated\n") == "net.prototxt:1:7: a string cannot span lines\n  hint: close the string before the end of the line")
        #expect(error("}") == "net.prototxt:1:1: unexpected '}' with no open message to close\n  hint: remove it, or look for a missing '{' above")
    }

    @Test("type errors say what the field expects")
    func typeErrors() {
        #expect(error("layer { name: \"c\" convolution_param { num_output: -3 } }") ==
                "net.prototxt:1:51: layer 'c': field 'num_output' expects an integer in 0...4294967295, found '-3'")
        #expect(error("layer { name: \"c\" convolution_param { num_output: 2.5 } }") ==
                "net.prototxt:1:51: layer 'c': field 'num_output' expects an integer (no decimal point), found '2.5'")
        #expect(error("layer { name: c }") ==
                "net.prototxt:1:15: layer 'c': field 'name' expects a quoted string, found 'c'\n  hint: write name: \"c\"")
        #expect(error("layer { name: \"x\" convolution_param: 3 }") ==
                "net.prototxt:1:38: layer 'x': field 'convolution_param' is a message (caffe.ConvolutionParameter); expected '{', found '3'\n  hint: write convolution_param { ... }")
        #expect(error("name: \"a\" name: \"b\"") ==
                "net.prototxt:1:11: field 'name' of caffe.NetParameter is set twice (first at 1:1); it is not repeated\n  hint: keep one of the two values")
    }

    @Test("numbers: hex, octal, exponents, inf, float suffix")
    func numbers() throws {
        let text = "layer { name: \"d\" type: \"Dropout\" dropout_param { dropout_ratio: .25 } } " +
            "layer { name: \"p\" type: \"Power\" power_param { power: 2.f scale: -inf shift: 1E2 } } " +
            "layer { name: \"i\" type: \"InnerProduct\" inner_product_param { num_output: 010 axis: -1 } }"
        let net = try CaffeFiles.parseNet(text: text).net
        #expect(net.layer[0].dropoutParam.dropoutRatio == 0.25)
        #expect(net.layer[1].powerParam.power == 2)
        #expect(net.layer[1].powerParam.scale == -.infinity)
        #expect(net.layer[1].powerParam.shift == 100)
        #expect(net.layer[2].innerProductParam.numOutput == 8)
        #expect(net.layer[2].innerProductParam.axis == -1)
    }

    @Test("string escapes and adjacent literals")
    func strings() throws {
        let net = try CaffeFiles.parseNet(text: #"name: "a\tb" 'c\'d' "\x41\101""#).net
        #expect(net.name == "a\tbc'dAA")
    }

    @Test("the same text renders back to prototxt and reads again identically")
    func roundTrip() throws {
        let text = """
        name: "r"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } } }
        layer { name: "c" type: "Convolution" bottom: "data" top: "c" param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
                convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 } } }
        """
        let first = try CaffeFiles.parseNet(text: text).net
        let second = try CaffeFiles.parseNet(text: CaffeFiles.prototxt(first)).net
        #expect(first == second)
    }

    @Test("solvers read, including legacy fields")
    func solver() throws {
        let solver = try CaffeFiles.parseSolver(text: "net: \"n.prototxt\" base_lr: 0.01 lr_policy: \"step\" stepvalue: 10 stepvalue: 20 solver_mode: CPU")
        #expect(solver.net == "n.prototxt")
        #expect(solver.baseLr == 0.01)
        #expect(solver.stepvalue == [10, 20])
    }
}
