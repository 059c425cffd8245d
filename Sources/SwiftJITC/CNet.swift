import CSwiftJIT
import Foundation
import Runtime
import SwiftJIT

/// What `sj_net` holds: a `LayerwiseNet` and the C strings handed out for it (names, types,
/// python_param fields), which live as long as the net.
final class CNet {
    let net: LayerwiseNet
    let strings = CStrings()

    init(_ net: LayerwiseNet) { self.net = net }

    func layer(_ index: Int32) -> LayerwiseNet.Layer? {
        net.layers.indices.contains(Int(index)) ? net.layers[Int(index)] : nil
    }

    func layerOrThrow(_ index: Int32) throws -> LayerwiseNet.Layer {
        guard let layer = layer(index) else {
            throw CAPIError(.invalidArgument, "layer index \(index) is out of range: the net has \(net.layers.count) layers")
        }
        return layer
    }
}

/// Reads and writes `sj_blob_ref`s in arrays of the C caller's memory, at the offsets C lays its
/// fields out at (taken from the header's own struct, imported through CSwiftJIT).
enum CBlobRef {
    static let maxDims = Int(SJ_MAX_DIMS)
    static let nameOffset = MemoryLayout<sj_blob_ref>.offset(of: \sj_blob_ref.name)!
    static let ndimOffset = MemoryLayout<sj_blob_ref>.offset(of: \sj_blob_ref.ndim)!
    static let dimsOffset = MemoryLayout<sj_blob_ref>.offset(of: \sj_blob_ref.dims)!
    static let dataOffset = MemoryLayout<sj_blob_ref>.offset(of: \sj_blob_ref.data)!
    static let diffOffset = MemoryLayout<sj_blob_ref>.offset(of: \sj_blob_ref.diff)!
    static let size = MemoryLayout<sj_blob_ref>.stride

    static func write(_ ref: UnsafeMutableRawPointer, name: UnsafePointer<CChar>?, shape: [Int],
                      data: UnsafeMutablePointer<Float>?, diff: UnsafeMutablePointer<Float>?) {
        ref.storeBytes(of: name, toByteOffset: nameOffset, as: UnsafePointer<CChar>?.self)
        ref.storeBytes(of: Int32(min(shape.count, maxDims)), toByteOffset: ndimOffset, as: Int32.self)
        for k in 0..<maxDims {
            ref.storeBytes(of: k < shape.count ? Int64(shape[k]) : 0, toByteOffset: dimsOffset + 8 * k, as: Int64.self)
        }
        ref.storeBytes(of: data, toByteOffset: dataOffset, as: UnsafeMutablePointer<Float>?.self)
        ref.storeBytes(of: diff, toByteOffset: diffOffset, as: UnsafeMutablePointer<Float>?.self)
    }

    /// The shape a caller's layer wrote (ndim clamped to 0...SJ_MAX_DIMS).
    static func shape(_ ref: UnsafeRawPointer) -> [Int] {
        let ndim = Int(ref.load(fromByteOffset: ndimOffset, as: Int32.self))
        return (0..<max(0, min(ndim, maxDims))).map { Int(ref.load(fromByteOffset: dimsOffset + 8 * $0, as: Int64.self)) }
    }
}

@_cdecl("sj_net_create")
public func sj_net_create(_ prototxt: UnsafePointer<CChar>?, _ weights: UnsafePointer<CChar>?, _ options: OpaquePointer?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer? {
    CStatus.catching {
        guard let out else { throw CAPIError(.invalidArgument, "out is NULL") }
        out.pointee = nil
        let path = try cString(prototxt, "prototxt_path")
        let settings = Handle.peek(options, as: COptions.self) ?? COptions()
        let definition = try CaffeFiles.loadNet(path: path)
        let compiler = try Compiler(threads: settings.threads ?? ProcessInfo.processInfo.activeProcessorCount,
                                            cache: settings.makeKernelCache())
        let net = try LayerwiseNet(definition: definition, phase: settings.phase, level: settings.level,
                                   stages: settings.stages.isEmpty ? nil : settings.stages, inputShapes: settings.inputShapes,
                                   weights: weights.map { [String(cString: $0)] } ?? [], seed: settings.seed, compiler: compiler,
                                   hostLayers: settings.hostLayer())
        out.pointee = Handle.retain(CNet(net))
    }
}

@_cdecl("sj_net_free")
public func sj_net_free(_ net: OpaquePointer?) {
    Handle.release(net, as: CNet.self)
}

@_cdecl("sj_net_layer_count")
public func sj_net_layer_count(_ net: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.net.layers.count ?? 0)
}

@_cdecl("sj_net_layer_name")
public func sj_net_layer_name(_ net: OpaquePointer?, _ layer: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), let info = box.layer(layer) else { return nil }
    return box.strings.pointer(info.name)
}

@_cdecl("sj_net_layer_type")
public func sj_net_layer_type(_ net: OpaquePointer?, _ layer: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), let info = box.layer(layer) else { return nil }
    return box.strings.pointer(info.type)
}

@_cdecl("sj_net_layer_bottom_count")
public func sj_net_layer_bottom_count(_ net: OpaquePointer?, _ layer: Int32) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.layer(layer)?.bottoms.count ?? 0)
}

@_cdecl("sj_net_layer_bottom")
public func sj_net_layer_bottom(_ net: OpaquePointer?, _ layer: Int32, _ index: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), let info = box.layer(layer), info.bottoms.indices.contains(Int(index)) else { return nil }
    return box.strings.pointer(info.bottoms[Int(index)])
}

@_cdecl("sj_net_layer_top_count")
public func sj_net_layer_top_count(_ net: OpaquePointer?, _ layer: Int32) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.layer(layer)?.tops.count ?? 0)
}

@_cdecl("sj_net_layer_top")
public func sj_net_layer_top(_ net: OpaquePointer?, _ layer: Int32, _ index: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), let info = box.layer(layer), info.tops.indices.contains(Int(index)) else { return nil }
    return box.strings.pointer(info.tops[Int(index)])
}

@_cdecl("sj_net_layer_param_count")
public func sj_net_layer_param_count(_ net: OpaquePointer?, _ layer: Int32) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.layer(layer)?.parameterCount ?? 0)
}

@_cdecl("sj_net_layer_python_param")
public func sj_net_layer_python_param(_ net: OpaquePointer?, _ layer: Int32, _ module: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                      _ className: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                                      _ paramString: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let info = try box.layerOrThrow(layer)
        guard let python = info.python else {
            throw CAPIError(.invalidArgument, "layer '\(info.name)' is a \(info.type) layer, not a Python layer")
        }
        module?.pointee = box.strings.pointer(python.module)
        className?.pointee = box.strings.pointer(python.layer)
        paramString?.pointee = box.strings.pointer(python.parameter)
    }
}

@_cdecl("sj_net_blob_count")
public func sj_net_blob_count(_ net: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.net.blobNames.count ?? 0)
}

@_cdecl("sj_net_blob_name")
public func sj_net_blob_name(_ net: OpaquePointer?, _ blob: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), box.net.blobNames.indices.contains(Int(blob)) else { return nil }
    return box.strings.pointer(box.net.blobNames[Int(blob)])
}

@_cdecl("sj_net_input_count")
public func sj_net_input_count(_ net: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.net.inputs.count ?? 0)
}

@_cdecl("sj_net_input_name")
public func sj_net_input_name(_ net: OpaquePointer?, _ index: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), box.net.inputs.indices.contains(Int(index)) else { return nil }
    return box.strings.pointer(box.net.inputs[Int(index)])
}

@_cdecl("sj_net_output_count")
public func sj_net_output_count(_ net: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(net, as: CNet.self)?.net.outputs.count ?? 0)
}

@_cdecl("sj_net_output_name")
public func sj_net_output_name(_ net: OpaquePointer?, _ index: Int32) -> UnsafePointer<CChar>? {
    guard let box = Handle.peek(net, as: CNet.self), box.net.outputs.indices.contains(Int(index)) else { return nil }
    return box.strings.pointer(box.net.outputs[Int(index)])
}

@_cdecl("sj_net_blob_loss_weight")
public func sj_net_blob_loss_weight(_ net: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> Float {
    guard let box = Handle.peek(net, as: CNet.self), let name else { return 0 }
    return box.net.lossWeights[String(cString: name)] ?? 0
}

@_cdecl("sj_net_blob")
public func sj_net_blob(_ net: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ blob: UnsafeMutableRawPointer?) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let text = try cString(name, "name")
        guard let blob else { throw CAPIError(.invalidArgument, "blob is NULL") }
        guard let memory = box.net.blob(text) else {
            throw CAPIError(.notFound, "the net has no blob '\(text)'; its blobs are " + box.net.blobNames.map { "'\($0)'" }.joined(separator: ", "))
        }
        CBlobRef.write(blob, name: box.strings.pointer(text), shape: memory.shape, data: memory.data, diff: memory.diff)
    }
}

@_cdecl("sj_net_param")
public func sj_net_param(_ net: OpaquePointer?, _ layer: Int32, _ index: Int32, _ blob: UnsafeMutableRawPointer?) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let info = try box.layerOrThrow(layer)
        guard let blob else { throw CAPIError(.invalidArgument, "blob is NULL") }
        guard let memory = box.net.parameter(layer: Int(layer), index: Int(index)) else {
            throw CAPIError(.notFound, "layer '\(info.name)' has \(info.parameterCount) parameter blobs; there is no blob \(index)")
        }
        CBlobRef.write(blob, name: box.strings.pointer("\(info.name)/\(index)"), shape: memory.shape, data: memory.data, diff: memory.diff)
    }
}

@_cdecl("sj_net_set_input_shape")
public func sj_net_set_input_shape(_ net: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ dims: UnsafePointer<Int64>?,
                                   _ ndim: Int32) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let text = try cString(name, "name")
        do {
            try box.net.setInputShape(text, try cShape(dims, ndim, of: text))
        } catch let diagnostic as Diagnostic {
            throw CAPIError(.notFound, diagnostic.description)
        }
    }
}

@_cdecl("sj_net_reshape")
public func sj_net_reshape(_ net: OpaquePointer?) -> OpaquePointer? {
    CStatus.catching { try Handle.borrow(net, as: CNet.self, "net").net.reshape() }
}

@_cdecl("sj_net_forward")
public func sj_net_forward(_ net: OpaquePointer?, _ start: Int32, _ end: Int32, _ loss: UnsafeMutablePointer<Float>?) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let value = try box.net.forward(from: start < 0 ? nil : Int(start), to: end < 0 ? nil : Int(end))
        loss?.pointee = value
    }
}

@_cdecl("sj_net_backward")
public func sj_net_backward(_ net: OpaquePointer?, _ start: Int32, _ end: Int32) -> OpaquePointer? {
    CStatus.catching(diagnosticCode: .invalidArgument) {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        try box.net.backward(from: start < 0 ? nil : Int(start), to: end < 0 ? nil : Int(end))
    }
}

@_cdecl("sj_net_clear_param_diffs")
public func sj_net_clear_param_diffs(_ net: OpaquePointer?) {
    Handle.peek(net, as: CNet.self)?.net.zeroParameterDiffs()
}

@_cdecl("sj_net_save")
public func sj_net_save(_ net: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> OpaquePointer? {
    CStatus.catching { try Handle.borrow(net, as: CNet.self, "net").net.save(to: try cString(path, "path")) }
}

@_cdecl("sj_net_copy_from")
public func sj_net_copy_from(_ net: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let file = try cString(path, "path")
        guard FileManager.default.fileExists(atPath: file) else { throw CAPIError(.notFound, "\(file): no such file") }
        try box.net.copyParameters(from: file)
    }
}

@_cdecl("sj_net_share_with")
public func sj_net_share_with(_ net: OpaquePointer?, _ other: OpaquePointer?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(net, as: CNet.self, "net")
        let source = try Handle.borrow(other, as: CNet.self, "other")
        try box.net.share(with: source.net)
    }
}

/// `sj_layer_function` as Swift sees it.
typealias CLayerFunction = @convention(c) (UnsafeMutableRawPointer?, Int32, UnsafePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?,
                                           Int32, UnsafeMutableRawPointer?, UnsafePointer<Int32>?) -> Int32

extension COptions {
    /// The caller's layer function as `HostLayers` (nil when none was set): each call lays the
    /// blobs out as `sj_blob_ref` arrays and, in SETUP and RESHAPE, reads the tops' shapes back.
    func hostLayer(indexOffset: Int = 0) -> HostLayers? {
        guard let raw = layerFunction else { return nil }
        let function = unsafeBitCast(raw, to: CLayerFunction.self)
        let user = layerUser
        let names = CStrings()
        return HostLayers(indexOffset: indexOffset) { index, name, stage, bottoms, tops, propagateDown in
            let refs = UnsafeMutableRawPointer.allocate(byteCount: max(1, bottoms.count + tops.count) * CBlobRef.size, alignment: 8)
            defer { refs.deallocate() }
            for (i, blob) in bottoms.enumerated() {
                CBlobRef.write(refs + i * CBlobRef.size, name: names.pointer(blob.name), shape: blob.shape, data: blob.data, diff: blob.diff)
            }
            let topRefs = refs + bottoms.count * CBlobRef.size
            for (i, blob) in tops.enumerated() {
                CBlobRef.write(topRefs + i * CBlobRef.size, name: names.pointer(blob.name), shape: blob.shape, data: blob.data, diff: blob.diff)
            }
            let flags = propagateDown.map { Int32($0 ? 1 : 0) } + [0]
            let code = flags.withUnsafeBufferPointer { flags in
                function(user, Int32(index), names.pointer(name), stage.rawValue, Int32(bottoms.count), bottoms.isEmpty ? nil : refs,
                         Int32(tops.count), tops.isEmpty ? nil : topRefs, flags.baseAddress)
            }
            if code == 0, stage == .setup || stage == .reshape {
                for i in tops.indices { tops[i].shape = CBlobRef.shape(topRefs + i * CBlobRef.size) }
            }
            return code
        }
    }
}
