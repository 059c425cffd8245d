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
/// from an LMDB of `AnnotatedDatum` records: each image resized by `resize_param` (WARP, linear),
/// mean/scale applied, mirrored at random when `mirror` is set (boxes flipped with it); each box
/// kept when its centre (emit CENTER) or coverage (MIN_OVERLAP) passes `emit_constraint`, clipped
/// to the image, and written as a label row `[item, label, instance, xmin, ymin, xmax, ymax,
/// difficult]`.
///
/// Not run (refused in `init`, naming the field): random crops (`batch_sampler` with a sampler
/// that is not the whole image), `distort_param`, `expand_param`, `noise_param`, `crop_size`,
/// resize modes other than WARP and interpolations other than LINEAR. The fork's label blob has
/// as many rows as the batch has boxes; here it has a fixed `labelRows` (the batch size times the
/// most boxes of any record, found by scanning the LMDB once), padded with rows of item -1, which
/// MultiBoxLoss skips as the fork's `GetGroundTruth` does — so the train net compiles once.
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
    private var failure = StickyFailure()

    public init(layer: Caffe_LayerParameter, phase: Caffe_Phase, seed: UInt32, baseDirectory: String?) throws {
        let data = layer.dataParam, t = layer.transformParam
        guard !data.source.isEmpty else { throw Diagnostic("data_param.source is empty", layer: layer.name, hint: "set it to the annotated LMDB folder") }
        guard data.batchSize > 0 else { throw Diagnostic("data_param.batch_size must be positive", layer: layer.name) }
        func refuse(_ field: String, _ why: String) -> Diagnostic {
            Diagnostic("AnnotatedData's \(field) is not supported yet: \(why)", layer: layer.name,
                       hint: "remove \(field) (the data is then read without it), or prepare the images beforehand")
        }
        for sampler in layer.annotatedDataParam.batchSampler {
            let s = sampler.sampler
            let identity = (!sampler.hasSampler || (s.minScale == 1 && s.maxScale == 1 && s.minAspectRatio == 1 && s.maxAspectRatio == 1))
            if !identity { throw refuse("annotated_data_param.batch_sampler", "random crops (a sampler with scales or aspect ratios other than 1)") }
        }
        if t.hasDistortParam, [t.distortParam.brightnessProb, t.distortParam.contrastProb, t.distortParam.hueProb,
                                t.distortParam.saturationProb, t.distortParam.randomOrderProb].contains(where: { $0 > 0 }) {
            throw refuse("transform_param.distort_param", "photometric distortions")
        }
        if t.hasExpandParam, t.expandParam.prob > 0, t.expandParam.maxExpandRatio > 1 { throw refuse("transform_param.expand_param", "zoom-out expansion") }
        if t.hasNoiseParam { throw refuse("transform_param.noise_param", "noise") }
        if t.cropSize > 0 || t.cropH > 0 || t.cropW > 0 { throw refuse("transform_param.crop_size", "cropping would also crop the boxes") }
        if t.hasResizeParam {
            let r = t.resizeParam
            if r.resizeMode != .warp { throw refuse("transform_param.resize_param.resize_mode", "only WARP is run") }
            if r.prob < 1 { throw refuse("transform_param.resize_param.prob", "only prob: 1 is run") }
            if r.interpMode.contains(where: { $0 != .linear }) { throw refuse("transform_param.resize_param.interp_mode", "only LINEAR is run") }
            guard r.height > 0, r.width > 0 else { throw Diagnostic("resize_param needs height and width", layer: layer.name) }
            resize = (Int(r.height), Int(r.width))
        } else {
            resize = nil
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
            if let resize { image = try resized(image, resize, key: key) }
            guard [batchSize] + (try transformer.outputShape(forInput: image.shape, key: key)) == batchShape else {
                throw Diagnostic("record at key \(key) is \(image.shape.map(String.init).joined(separator: "×")), but the batch is \(batchShape.map(String.init).joined(separator: "×"))",
                                 file: source, hint: "records of one size, or a resize_param")
            }
            try batch.data.withUnsafeMutableBufferPointer { all in
                try transformer.transform(image, into: UnsafeMutableBufferPointer(rebasing: all[(item * itemCount)..<((item + 1) * itemCount)]))
            }
            let mirrored = mirror && generator.next(below: 2) == 1
            if mirrored { flip(&batch.data, item: item) }
            for box in annotated.boxes {
                guard let kept = place(box) else { continue }
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

    /// The fork's `TransformAnnotation` without a crop: the emit constraint against the whole
    /// image, then `ProjectBBox` onto it (clipped to [0, 1]; dropped without overlap or area).
    private func place(_ b: AnnotatedBox) -> AnnotatedBox? {
        if let emit {
            switch emit.emitType {
            case .center:
                let cx = (b.xmin + b.xmax) / 2, cy = (b.ymin + b.ymax) / 2
                guard cx >= 0, cx <= 1, cy >= 0, cy <= 1 else { return nil }
            case .minOverlap:
                let w = min(b.xmax, 1) - max(b.xmin, 0), h = min(b.ymax, 1) - max(b.ymin, 0)
                let area = (b.xmax - b.xmin) * (b.ymax - b.ymin)
                guard w > 0, h > 0, area > 0, w * h / area >= emit.emitOverlap else { return nil }
            }
        }
        guard !(b.xmin >= 1 || b.xmax <= 0 || b.ymin >= 1 || b.ymax <= 0) else { return nil }
        var p = b
        (p.xmin, p.ymin, p.xmax, p.ymax) = (max(0, min(1, b.xmin)), max(0, min(1, b.ymin)), max(0, min(1, b.xmax)), max(0, min(1, b.ymax)))
        guard p.xmax > p.xmin, p.ymax > p.ymin else { return nil }
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
    private func resized(_ image: DatumImage, _ size: (height: Int, width: Int), key: String) throws -> DatumImage {
        guard image.height != size.height || image.width != size.width else { return image }
        guard case .bytes(let planar) = image.pixels else {
            throw Diagnostic("record at key \(key) holds float_data; resize_param resizes 8-bit images only", file: source)
        }
        let (c, h, w) = (image.channels, image.height, image.width)
        var interleaved = [UInt8](repeating: 0, count: c * h * w)
        let bytes = [UInt8](planar)
        for k in 0..<c { for p in 0..<(h * w) { interleaved[p * c + k] = bytes[k * h * w + p] } }
        let out = ImageResize.bilinear(DecodedImage(channels: c, height: h, width: w, pixels: interleaved), height: size.height, width: size.width)
        var back = [UInt8](repeating: 0, count: c * size.height * size.width)
        for k in 0..<c { for p in 0..<(size.height * size.width) { back[k * size.height * size.width + p] = out.pixels[p * c + k] } }
        return DatumImage(channels: c, height: size.height, width: size.width, label: image.label, pixels: .bytes(Data(back)))
    }
}
