import CaffeFormat
import Foundation

/// One box of an SSD `AnnotatedDatum` (weiliu89/caffe's `Annotation` in an `AnnotationGroup`):
/// the group's label, the annotation's instance id, normalized corners and the difficult flag.
public struct AnnotatedBox: Sendable, Equatable {
    public var label: Int32
    public var instance: Int32
    public var xmin: Float, ymin: Float, xmax: Float, ymax: Float
    public var difficult: Bool

    public init(label: Int32, instance: Int32, xmin: Float, ymin: Float, xmax: Float, ymax: Float, difficult: Bool) {
        (self.label, self.instance, self.xmin, self.ymin, self.xmax, self.ymax, self.difficult) = (label, instance, xmin, ymin, xmax, ymax, difficult)
    }
}

/// A decoded `AnnotatedDatum` record: the image `Datum` and its boxes in group order. Decoded from
/// the protobuf wire format by hand (the fork's message numbers: `AnnotatedDatum { datum = 1;
/// type = 2; annotation_group = 3 }`, `AnnotationGroup { group_label = 1; annotation = 2 }`,
/// `Annotation { instance_id = 1; bbox = 2 }`, `NormalizedBBox { xmin = 1 … ymax = 4; label = 5;
/// difficult = 6; score = 7; size = 8 }`); `encoded()` writes the same layout (for tests and tools).
public struct AnnotatedDatumRecord: Sendable, Equatable {
    public var datum: Data
    public var boxes: [AnnotatedBox]

    public init(datum: Data, boxes: [AnnotatedBox]) {
        self.datum = datum
        self.boxes = boxes
    }

    /// Parses a serialized `AnnotatedDatum`; throws a `Diagnostic` naming `key` on malformed bytes.
    public init(serialized bytes: Data, key: String) throws {
        var datum: Data?
        var boxes: [AnnotatedBox] = []
        do {
            for field in try WireFields(bytes) {
                switch (field.number, field.payload) {
                case (1, .bytes(let value)): datum = value
                case (3, .bytes(let group)):
                    var label: Int32 = 0
                    var annotations: [Data] = []
                    for inner in try WireFields(group) {
                        switch (inner.number, inner.payload) {
                        case (1, .varint(let value)): label = Int32(truncatingIfNeeded: value)
                        case (2, .bytes(let value)): annotations.append(value)
                        default: break
                        }
                    }
                    for annotation in annotations {
                        var box = AnnotatedBox(label: label, instance: 0, xmin: 0, ymin: 0, xmax: 0, ymax: 0, difficult: false)
                        for inner in try WireFields(annotation) {
                            switch (inner.number, inner.payload) {
                            case (1, .varint(let value)): box.instance = Int32(truncatingIfNeeded: value)
                            case (2, .bytes(let bbox)):
                                for corner in try WireFields(bbox) {
                                    switch (corner.number, corner.payload) {
                                    case (1, .fixed32(let v)): box.xmin = Float(bitPattern: v)
                                    case (2, .fixed32(let v)): box.ymin = Float(bitPattern: v)
                                    case (3, .fixed32(let v)): box.xmax = Float(bitPattern: v)
                                    case (4, .fixed32(let v)): box.ymax = Float(bitPattern: v)
                                    case (6, .varint(let v)): box.difficult = v != 0
                                    default: break
                                    }
                                }
                            default: break
                            }
                        }
                        boxes.append(box)
                    }
                default: break
                }
            }
        } catch {
            throw Diagnostic("corrupt AnnotatedDatum record at key \(key): \(error)", hint: "the LMDB should come from the SSD fork's create_annoset.py")
        }
        guard let datum else {
            throw Diagnostic("AnnotatedDatum record at key \(key) has no datum (field 1)", hint: "the LMDB should come from the SSD fork's create_annoset.py")
        }
        self.init(datum: datum, boxes: boxes)
    }

    /// The record serialized as the fork writes it (`type: BBOX`, one group per label in order of
    /// first appearance).
    public func encoded() -> Data {
        var out = Data()
        WireFields.appendBytes(1, datum, to: &out)
        WireFields.appendVarint(2, 0, to: &out)
        var labels: [Int32] = []
        for box in boxes where !labels.contains(box.label) { labels.append(box.label) }
        for label in labels {
            var group = Data()
            WireFields.appendVarint(1, UInt64(UInt32(bitPattern: label)), to: &group)
            for box in boxes where box.label == label {
                var bbox = Data()
                for (number, value) in [(1, box.xmin), (2, box.ymin), (3, box.xmax), (4, box.ymax)] {
                    WireFields.appendFixed32(number, value.bitPattern, to: &bbox)
                }
                WireFields.appendVarint(5, UInt64(UInt32(bitPattern: label)), to: &bbox)
                WireFields.appendVarint(6, box.difficult ? 1 : 0, to: &bbox)
                var annotation = Data()
                WireFields.appendVarint(1, UInt64(UInt32(bitPattern: box.instance)), to: &annotation)
                WireFields.appendBytes(2, bbox, to: &annotation)
                WireFields.appendBytes(2, annotation, to: &group)
            }
            WireFields.appendBytes(3, group, to: &out)
        }
        return out
    }
}

/// The fields of one protobuf message, in order (only what `AnnotatedDatumRecord` needs).
struct WireFields: Sequence {
    enum Payload { case varint(UInt64), fixed64(UInt64), bytes(Data), fixed32(UInt32) }
    struct Field { var number: Int; var payload: Payload }
    struct Malformed: Error, CustomStringConvertible { var description: String }

    let fields: [Field]

    init(_ data: Data) throws {
        let bytes = [UInt8](data)
        var fields: [Field] = []
        var i = 0
        func varint() throws -> UInt64 {
            var value: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard i < bytes.count, shift < 64 else { throw Malformed(description: "truncated varint at byte \(i)") }
                let byte = bytes[i]
                i += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while i < bytes.count {
            let tag = try varint()
            let number = Int(tag >> 3)
            switch tag & 7 {
            case 0: fields.append(Field(number: number, payload: .varint(try varint())))
            case 1:
                guard i + 8 <= bytes.count else { throw Malformed(description: "truncated fixed64 at byte \(i)") }
                let value = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) }
                i += 8
                fields.append(Field(number: number, payload: .fixed64(value)))
            case 2:
                let length = try varint()
                guard length <= UInt64(bytes.count - i) else { throw Malformed(description: "field \(number) claims \(length) bytes, \(bytes.count - i) remain") }
                fields.append(Field(number: number, payload: .bytes(Data(bytes[i..<(i + Int(length))]))))
                i += Int(length)
            case 5:
                guard i + 4 <= bytes.count else { throw Malformed(description: "truncated fixed32 at byte \(i)") }
                let value = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[i + $1]) << (8 * UInt32($1)) }
                i += 4
                fields.append(Field(number: number, payload: .fixed32(value)))
            default: throw Malformed(description: "unsupported wire type \(tag & 7) at byte \(i)")
            }
        }
        self.fields = fields
    }

    func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    static func appendVarintValue(_ value: UInt64, to out: inout Data) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
    static func appendVarint(_ number: Int, _ value: UInt64, to out: inout Data) {
        appendVarintValue(UInt64(number << 3), to: &out)
        appendVarintValue(value, to: &out)
    }
    static func appendFixed32(_ number: Int, _ value: UInt32, to out: inout Data) {
        appendVarintValue(UInt64(number << 3 | 5), to: &out)
        for k in 0..<4 { out.append(UInt8((value >> (8 * UInt32(k))) & 0xFF)) }
    }
    static func appendBytes(_ number: Int, _ value: Data, to out: inout Data) {
        appendVarintValue(UInt64(number << 3 | 2), to: &out)
        appendVarintValue(UInt64(value.count), to: &out)
        out.append(value)
    }
}

/// Reads batches of an SSD `AnnotatedData` layer (weiliu89/caffe `AnnotatedDataLayer::load_batch`)
/// from an LMDB of `AnnotatedDatum` records. Per image, in the fork's order: photometric
/// distortion (`distort_param`, `PhotometricDistortion`), zoom-out onto a `mean_value` canvas
/// (`expand_param`), one random crop of those the `batch_sampler`s keep (`CropSampler`; the whole
/// image when none), boxes carried through each step under `emit_constraint`; then the WARP
/// `resize_param` with an interpolation drawn from `interp_mode` (`ImageResize.resized`),
/// mean/scale, and a random mirror (boxes flipped with it). Each surviving box becomes a label row
/// `[item, label, instance, xmin, ymin, xmax, ymax, difficult]`.
///
/// Draws are reproducible for the layer's data seed: mirroring has its own generator (as before),
/// the augmentations another. Not run (refused in `init`, naming the field): `noise_param`,
/// `crop_size`, resize modes other than WARP, `resize_param.prob` below 1, and `expand_param`
/// with a `mean_file`. The fork's label blob has as many rows as the batch has boxes; here it
/// has a fixed `labelRows` (the batch size times the most boxes of any record, found by scanning
/// the LMDB once — crops only drop boxes), padded with rows of item -1, which MultiBoxLoss skips as
/// the fork's `GetGroundTruth` does — so the train net compiles once.
public final class AnnotatedDataReader: BatchSource {
    public let source: String
    public let batchSize: Int
    /// `[N, C, H, W]` of every batch.
    public let batchShape: [Int]
    /// Rows of the `1×1×labelRows×8` label blob.
    public let labelRows: Int
    private let reader: any DatumCursor
    private var transformer: DataTransformer
    private let resize: (height: Int, width: Int)?
    private let mirror: Bool
    private var generator: MersenneTwister
    private let emit: Caffe_EmitConstraint?
    private let sampler: CropSampler?
    private let distortion: PhotometricDistortion?
    private let expansion: Caffe_ExpansionParameter?
    /// `mean_value` as 8-bit values: what `expand_param` fills its canvas with.
    private let canvasFill: [UInt8]
    /// `resize_param.interp_mode`: one is drawn per image.
    private let interpolations: [Caffe_ResizeParameter.Interp_mode]
    /// Draws of the augmentations (distortion, expansion, crops, interpolation), apart from mirroring.
    private var augmentation: MersenneTwister
    private var failure = StickyFailure()

    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32, baseDirectory: String?) throws {
        let data = layer.dataParam, t = layer.transformParam
        guard !data.source.isEmpty else { throw Diagnostic("data_param.source is empty", layer: layer.name, hint: "set it to the annotated LMDB folder") }
        guard data.batchSize > 0 else { throw Diagnostic("data_param.batch_size must be positive", layer: layer.name) }
        func refuse(_ field: String, _ why: String) -> Diagnostic {
            Diagnostic("AnnotatedData's \(field) is not supported yet: \(why)", layer: layer.name,
                       hint: "remove \(field) (the data is then read without it), or prepare the images beforehand")
        }
        sampler = layer.annotatedDataParam.batchSampler.isEmpty ? nil : try CropSampler(layer.annotatedDataParam.batchSampler, layer: layer.name)
        distortion = t.hasDistortParam ? try PhotometricDistortion(t.distortParam, layer: layer.name) : nil
        if t.hasExpandParam {
            guard t.expandParam.maxExpandRatio > 1 else {
                throw Diagnostic("transform_param.expand_param.max_expand_ratio is \(t.expandParam.maxExpandRatio); it must be greater than 1",
                                 layer: layer.name, hint: "ssd_pascal.py uses max_expand_ratio: 4 (or drop expand_param)")
            }
            if t.hasMeanFile {
                throw refuse("transform_param.expand_param with mean_file", "the canvas is filled with mean_value; a mean image cannot fit a canvas of random size")
            }
        }
        expansion = t.hasExpandParam ? t.expandParam : nil
        canvasFill = t.meanValue.map { PhotometricDistortion.saturate($0) }
        if t.hasNoiseParam { throw refuse("transform_param.noise_param", "noise") }
        if t.cropSize > 0 || t.cropH > 0 || t.cropW > 0 { throw refuse("transform_param.crop_size", "cropping would also crop the boxes") }
        if t.hasResizeParam {
            let r = t.resizeParam
            if r.resizeMode != .warp { throw refuse("transform_param.resize_param.resize_mode", "only WARP is run") }
            if r.prob < 1 { throw refuse("transform_param.resize_param.prob", "only prob: 1 is run") }
            interpolations = r.interpMode.isEmpty ? [.linear] : r.interpMode
            guard r.height > 0, r.width > 0 else { throw Diagnostic("resize_param needs height and width", layer: layer.name) }
            resize = (Int(r.height), Int(r.width))
        } else {
            resize = nil
            interpolations = [.linear]
        }
        if layer.annotatedDataParam.hasAnnoType, layer.annotatedDataParam.annoType != .bbox {
            throw refuse("annotated_data_param.anno_type", "only BBOX")
        }
        emit = t.hasEmitConstraint ? t.emitConstraint : nil
        mirror = t.mirror
        var plain = t
        plain.mirror = false
        plain.clearResizeParam()
        plain.clearEmitConstraint()
        plain.clearDistortParam()
        plain.clearExpandParam()
        transformer = try DataTransformer(plain, phase: phase, seed: seed, baseDirectory: baseDirectory, layer: layer.name)
        generator = MersenneTwister(seed: seed ^ 0x5EED_B0C5)
        augmentation = MersenneTwister(seed: seed ^ 0xA0C_5A3B)
        source = resolve(data.source, against: baseDirectory)
        batchSize = Int(data.batchSize)
        reader = try openDatumCursor(path: source, backend: DatabaseBackend.forDataLayer(data, source: source))
        // The most boxes of any record sets the label rows; the first record, the image shape.
        let first = try reader.peek()
        var most = 0
        let count: Int
        switch reader {
        case let lmdb as LMDBReader: count = lmdb.count
        case let leveldb as LevelDBReader: count = leveldb.count
        default: count = 1
        }
        for _ in 0..<max(1, count) {
            let record = try reader.read()
            most = max(most, try AnnotatedDatumRecord(serialized: record.value, key: record.keyDescription).boxes.count)
        }
        labelRows = max(1, batchSize * most)
        let image = try AnnotatedDataReader.image(first, source: source, colorMode: transformer.colorMode)
        let shape = [image.channels, resize?.height ?? image.height, resize?.width ?? image.width]
        batchShape = [batchSize] + (try transformer.outputShape(forInput: shape, key: first.keyDescription))
    }

    static func image(_ record: LMDBRecord, source: String, colorMode: ImageColorMode) throws -> DatumImage {
        let annotated = try AnnotatedDatumRecord(serialized: record.value, key: record.keyDescription)
        return try DatumImage(serialized: annotated.datum, key: record.keyDescription, colorMode: colorMode, source: source)
    }

    /// Overwrites `batch` with the next batch: images in `data`, `labelRows × 8` label values in `labels`.
    public func fill(_ batch: inout DataBatch) throws {
        try failure.run({ try load(&batch) }, cleanUp: { reader.close() })
    }

    private func load(_ batch: inout DataBatch) throws {
        let itemCount = batchShape.dropFirst().reduce(1, *)
        if batch.shape != batchShape || batch.data.count != batchSize * itemCount { batch = DataBatch(shape: batchShape) }
        var rows: [Float] = []
        batch.keys.removeAll(keepingCapacity: true)
        for item in 0..<batchSize {
            let record = try reader.read()
            let key = record.keyDescription
            let annotated = try AnnotatedDatumRecord(serialized: record.value, key: key)
            var image = try DatumImage(serialized: annotated.datum, key: key, colorMode: transformer.colorMode, source: source)
            var boxes = annotated.boxes
            try augment(&image, &boxes, key: key)
            if let resize { image = try resized(image, resize, interpolation: drawInterpolation(), key: key) }
            guard [batchSize] + (try transformer.outputShape(forInput: image.shape, key: key)) == batchShape else {
                throw Diagnostic("record at key \(key) is \(image.shape.map(String.init).joined(separator: "×")), but the batch is \(batchShape.map(String.init).joined(separator: "×"))",
                                 file: source, hint: "records of one size, or a resize_param")
            }
            try batch.data.withUnsafeMutableBufferPointer { all in
                try transformer.transform(image, into: UnsafeMutableBufferPointer(rebasing: all[(item * itemCount)..<((item + 1) * itemCount)]))
            }
            let mirrored = mirror && generator.next(below: 2) == 1
            if mirrored { flip(&batch.data, item: item) }
            for box in boxes {
                guard let kept = place(box, resized: resize != nil) else { continue }
                let (xmin, xmax) = mirrored ? (1 - kept.xmax, 1 - kept.xmin) : (kept.xmin, kept.xmax)
                rows += [Float(item), Float(box.label), Float(box.instance), xmin, kept.ymin, xmax, kept.ymax, box.difficult ? 1 : 0]
            }
            batch.keys.append(key)
        }
        let padding = labelRows - rows.count / 8
        if padding < 0 { throw Diagnostic("a batch has \(rows.count / 8) boxes, more than the \(labelRows) label rows", file: source) }
        for _ in 0..<padding { rows += [-1, 0, 0, 0, 0, 0, 0, 0] }
        batch.labels = rows
    }

    /// The fork's `load_batch` augmentations before the transformer, in its order: photometric
    /// distortion, expansion onto a mean-filled canvas, then one random crop of those the batch
    /// samplers keep (the whole image when they keep none); boxes follow the expansion and crop
    /// (`TransformAnnotation` with the emit constraint), dropped when they leave the image.
    ///
    /// The fork re-encodes an encoded image as JPEG after each step; here the pixels pass on
    /// exactly. It also distorts only encoded Datums (raw ones are logged and left); here both are.
    private func augment(_ image: inout DatumImage, _ boxes: inout [AnnotatedBox], key: String) throws {
        guard distortion != nil || expansion != nil || sampler != nil else { return }
        var planar: PlanarImage?
        func pixels(_ what: String) throws -> PlanarImage {
            if let planar { return planar }
            guard case .bytes(let bytes) = image.pixels else {
                throw Diagnostic("record at key \(key) holds float_data; \(what) works on 8-bit images only", file: source,
                                 hint: "store the images as 8-bit data (convert_annoset / create_annoset.py)")
            }
            return PlanarImage(channels: image.channels, height: image.height, width: image.width, pixels: [UInt8](bytes))
        }
        if let distortion {
            guard image.channels == 3 else {
                throw Diagnostic("record at key \(key) has \(image.channels) channels; distort_param works on 3-channel BGR images",
                                 file: source, hint: "set force_color: true in transform_param, or drop distort_param")
            }
            var edited = try pixels("distort_param")
            distortion.apply(&edited, using: &augmentation)
            planar = edited
        }
        if let expansion, augmentation.uniform(0, 1) <= expansion.prob, abs(expansion.maxExpandRatio - 1) >= 1e-2 {
            let current = try pixels("expand_param")
            let ratio = augmentation.uniform(1, expansion.maxExpandRatio)
            let (canvasHeight, canvasWidth) = (Int(Float(current.height) * ratio), Int(Float(current.width) * ratio))
            let top = Int(augmentation.uniform(0, Float(canvasHeight - current.height)).rounded(.down))
            let left = Int(augmentation.uniform(0, Float(canvasWidth - current.width)).rounded(.down))
            if !canvasFill.isEmpty, canvasFill.count != 1, canvasFill.count != current.channels {
                throw Diagnostic("transform_param has \(canvasFill.count) mean_value entries for \(current.channels)-channel images",
                                 file: source, hint: "give one mean_value, or one per channel")
            }
            let (canvas, frame) = current.expanded(ratio: ratio, top: top, left: left, fill: canvasFill)
            planar = canvas
            boxes = AnnotatedBox.transform(boxes, crop: frame, emit: emit)
        }
        if let sampler {
            let candidates = sampler.samples(objects: boxes.map(\.corners), using: &augmentation)
            if !candidates.isEmpty {
                let crop = candidates[Int(augmentation.next() % UInt32(candidates.count))].clipped
                if crop != .unit { planar = try pixels("a batch_sampler crop").cropped(to: crop) }
                boxes = AnnotatedBox.transform(boxes, crop: crop, emit: emit)
            }
        }
        if let planar {
            image = DatumImage(channels: planar.channels, height: planar.height, width: planar.width, label: image.label,
                               pixels: .bytes(Data(planar.pixels)))
        }
    }

    /// One of `resize_param.interp_mode`, drawn uniformly per image as the fork's `ApplyResize` does.
    private func drawInterpolation() -> Caffe_ResizeParameter.Interp_mode {
        interpolations.count == 1 ? interpolations[0] : interpolations[min(interpolations.count - 1, Int(augmentation.uniform(0, 1) * Float(interpolations.count)))]
    }

    /// The fork's final `TransformAnnotation` (no crop_size, so the crop is the whole image): with
    /// a WARP resize the box is first clipped to the image (`UpdateBBoxByResizePolicy` scales
    /// to pixels and back, clamping), then the
    /// emit constraint is checked and the box projected onto the image (clipped; dropped without
    /// overlap or area).
    private func place(_ b: AnnotatedBox, resized: Bool) -> AnnotatedBox? {
        var box = b.corners
        if resized { box = box.clipped }
        if let emit, !box.meets(emit, in: .unit) { return nil }
        guard let projected = box.projected(onto: .unit) else { return nil }
        var p = b
        p.corners = projected
        return p
    }

    /// Mirrors item `item`'s planes left to right in place.
    private func flip(_ data: inout [Float], item: Int) {
        let (c, h, w) = (batchShape[1], batchShape[2], batchShape[3])
        for plane in 0..<c {
            for row in 0..<h {
                let base = ((item * c + plane) * h + row) * w
                data[base..<(base + w)].reverse()
            }
        }
    }

    /// `image` resized to `size` with OpenCV's INTER_LINEAR (8-bit images only, as cv::resize runs on them).
    private func resized(_ image: DatumImage, _ size: (height: Int, width: Int), interpolation: Caffe_ResizeParameter.Interp_mode,
                         key: String) throws -> DatumImage {
        guard image.height != size.height || image.width != size.width else { return image }
        guard case .bytes(let planar) = image.pixels else {
            throw Diagnostic("record at key \(key) holds float_data; resize_param resizes 8-bit images only", file: source)
        }
        let (c, h, w) = (image.channels, image.height, image.width)
        var interleaved = [UInt8](repeating: 0, count: c * h * w)
        let bytes = [UInt8](planar)
        for k in 0..<c { for p in 0..<(h * w) { interleaved[p * c + k] = bytes[k * h * w + p] } }
        let out = ImageResize.resized(DecodedImage(channels: c, height: h, width: w, pixels: interleaved), height: size.height, width: size.width,
                                      interpolation: interpolation)
        var back = [UInt8](repeating: 0, count: c * size.height * size.width)
        for k in 0..<c { for p in 0..<(size.height * size.width) { back[k * size.height * size.width + p] = out.pixels[p * c + k] } }
        return DatumImage(channels: c, height: size.height, width: size.width, label: image.label, pixels: .bytes(Data(back)))
    }
}
