import CaffeFormat

/// A box in normalized image coordinates (`0…1` across the image), the fork's `NormalizedBBox`
/// corners, with the geometry of weiliu89/caffe's `bbox_util.cpp` that SSD's data augmentation
/// uses: intersection, size, Jaccard overlap, coverage, clipping, locating a box inside another,
/// projecting a box onto a crop, and the `emit_constraint` test.
///
/// All arithmetic is in `Float`, in the fork's order, so a box lands where the fork puts it.
///
///     let crop = NormalizedBox(xmin: 0.2, ymin: 0.2, xmax: 0.8, ymax: 0.8)
///     NormalizedBox(xmin: 0.1, ymin: 0.3, xmax: 0.5, ymax: 0.6).projected(onto: crop)
///     // (0, 0.1667, 0.5, 0.6667): clipped at the crop's left edge
public struct NormalizedBox: Sendable, Equatable {
    public var xmin: Float, ymin: Float, xmax: Float, ymax: Float

    public init(xmin: Float, ymin: Float, xmax: Float, ymax: Float) {
        (self.xmin, self.ymin, self.xmax, self.ymax) = (xmin, ymin, xmax, ymax)
    }

    /// The whole image.
    public static let unit = NormalizedBox(xmin: 0, ymin: 0, xmax: 1, ymax: 1)

    /// `BBoxSize` (normalized): width × height, 0 for an inverted box.
    public var size: Float {
        guard xmax >= xmin, ymax >= ymin else { return 0 }
        return (xmax - xmin) * (ymax - ymin)
    }

    /// `IntersectBBox`: the common part, or the zero box when they are apart.
    public func intersection(_ other: NormalizedBox) -> NormalizedBox {
        if other.xmin > xmax || other.xmax < xmin || other.ymin > ymax || other.ymax < ymin {
            return NormalizedBox(xmin: 0, ymin: 0, xmax: 0, ymax: 0)
        }
        return NormalizedBox(xmin: max(xmin, other.xmin), ymin: max(ymin, other.ymin),
                             xmax: min(xmax, other.xmax), ymax: min(ymax, other.ymax))
    }

    /// `JaccardOverlap` (normalized): intersection over union, 0 when they do not overlap.
    public func jaccardOverlap(_ other: NormalizedBox) -> Float {
        let common = intersection(other)
        let (width, height) = (common.xmax - common.xmin, common.ymax - common.ymin)
        guard width > 0, height > 0 else { return 0 }
        let area = width * height
        return area / (size + other.size - area)
    }

    /// `BBoxCoverage(self, other)`: the share of this box that `other` covers.
    public func coverage(by other: NormalizedBox) -> Float {
        let common = intersection(other).size
        return common > 0 ? common / size : 0
    }

    /// `ClipBBox`: every corner clamped to `0…1`.
    public var clipped: NormalizedBox {
        func clamp(_ v: Float) -> Float { max(min(v, 1), 0) }
        return NormalizedBox(xmin: clamp(xmin), ymin: clamp(ymin), xmax: clamp(xmax), ymax: clamp(ymax))
    }

    /// `LocateBBox(source, self)`: this box, given relative to `source`, in `source`'s frame.
    public func located(in source: NormalizedBox) -> NormalizedBox {
        let (width, height) = (source.xmax - source.xmin, source.ymax - source.ymin)
        return NormalizedBox(xmin: source.xmin + xmin * width, ymin: source.ymin + ymin * height,
                             xmax: source.xmin + xmax * width, ymax: source.ymin + ymax * height)
    }

    /// `ProjectBBox(crop, self)`: this box in the coordinates of `crop`, clipped to it; nil when
    /// it misses the crop or is left without area.
    public func projected(onto crop: NormalizedBox) -> NormalizedBox? {
        if xmin >= crop.xmax || xmax <= crop.xmin || ymin >= crop.ymax || ymax <= crop.ymin { return nil }
        let (width, height) = (crop.xmax - crop.xmin, crop.ymax - crop.ymin)
        let projected = NormalizedBox(xmin: (xmin - crop.xmin) / width, ymin: (ymin - crop.ymin) / height,
                                      xmax: (xmax - crop.xmin) / width, ymax: (ymax - crop.ymin) / height).clipped
        return projected.size > 0 ? projected : nil
    }

    /// `MeetEmitConstraint(crop, self, emit)`: CENTER keeps a box whose centre lies in `crop`
    /// (edges included); MIN_OVERLAP one whose share inside `crop` exceeds `emit_overlap`.
    public func meets(_ emit: Caffe_EmitConstraint, in crop: NormalizedBox) -> Bool {
        switch emit.emitType {
        case .center:
            let (x, y) = ((xmin + xmax) / 2, (ymin + ymax) / 2)
            return x >= crop.xmin && x <= crop.xmax && y >= crop.ymin && y <= crop.ymax
        case .minOverlap:
            return coverage(by: crop) > emit.emitOverlap
        }
    }
}

extension AnnotatedBox {
    /// The box's corners.
    public var corners: NormalizedBox {
        get { NormalizedBox(xmin: xmin, ymin: ymin, xmax: xmax, ymax: ymax) }
        set { (xmin, ymin, xmax, ymax) = (newValue.xmin, newValue.ymin, newValue.xmax, newValue.ymax) }
    }

    /// The fork's `TransformAnnotation` without resize or mirror: the boxes that pass `emit` against
    /// `crop` (when set), projected onto `crop`; the others are dropped.
    public static func transform(_ boxes: [AnnotatedBox], crop: NormalizedBox, emit: Caffe_EmitConstraint?) -> [AnnotatedBox] {
        boxes.compactMap { box in
            if let emit, !box.corners.meets(emit, in: crop) { return nil }
            guard let projected = box.corners.projected(onto: crop) else { return nil }
            var kept = box
            kept.corners = projected
            return kept
        }
    }
}
