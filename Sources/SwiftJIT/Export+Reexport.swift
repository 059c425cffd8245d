// The Export module (parameter layouts, ONNX, drawing) is part of the public SwiftJIT library.
@_exported import Export
