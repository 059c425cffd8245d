import CaffeFormat

/// SSD's `batch_sampler` random crops (weiliu89/caffe `sampler.cpp`): for each sampler, up to
/// `max_trials` boxes of a random scale and aspect ratio at a random place, kept when they satisfy
/// the sampler's `sample_constraint` against some ground-truth box (Jaccard overlap, sample or
/// object coverage within their bounds), until `max_sample` are kept. The reader then picks one
/// of all kept boxes at random, or keeps the whole image when there is none.
///
/// Draws come from the caller's `MersenneTwister`, in the fork's order (scale, aspect ratio, x
/// offset, y offset per trial), so a data seed gives the same crops on every run.
public struct CropSampler: Sendable {
    public let samplers: [Caffe_BatchSampler]

    /// Checks every sampler as the fork's `SampleBBox` CHECKs do, but as diagnostics naming `layer`.
    public init(_ samplers: [Caffe_BatchSampler], layer: String?) throws {
        for (index, batch) in samplers.enumerated() {
            let s = batch.sampler
            let field = "annotated_data_param.batch_sampler[\(index)].sampler"
            guard s.minScale > 0, s.maxScale <= 1, s.maxScale >= s.minScale else {
                throw Diagnostic("\(field) has min_scale \(s.minScale), max_scale \(s.maxScale); expected 0 < min_scale ≤ max_scale ≤ 1",
                                 layer: layer, hint: "scales are fractions of the image side, as in ssd_pascal.py (0.3 … 1)")
            }
            guard s.minAspectRatio > 0, s.maxAspectRatio >= s.minAspectRatio, s.maxAspectRatio < .greatestFiniteMagnitude else {
                throw Diagnostic("\(field) has min_aspect_ratio \(s.minAspectRatio), max_aspect_ratio \(s.maxAspectRatio); expected 0 < min ≤ max",
                                 layer: layer, hint: "ssd_pascal.py uses 0.5 … 2")
            }
        }
        self.samplers = samplers
    }

    /// `SampleBBox`: one box of the sampler's random scale and aspect ratio (the ratio clamped to
    /// `scale²…1/scale²` so the box fits), placed uniformly inside the unit square.
    public static func sampleBox(_ sampler: Caffe_Sampler, using generator: inout MersenneTwister) -> NormalizedBox {
        let scale = generator.uniform(sampler.minScale, sampler.maxScale)
        var ratio = generator.uniform(sampler.minAspectRatio, sampler.maxAspectRatio)
        ratio = max(ratio, scale * scale)
        ratio = min(ratio, 1 / (scale * scale))
        let width = scale * ratio.squareRoot(), height = scale / ratio.squareRoot()
        let x = generator.uniform(0, 1 - width), y = generator.uniform(0, 1 - height)
        return NormalizedBox(xmin: x, ymin: y, xmax: x + width, ymax: y + height)
    }

    /// `SatisfySampleConstraint`: true without constraints; otherwise true when one object box
    /// passes every bound that is set (Jaccard overlap, the share of the sample it covers, the
    /// share of it the sample covers).
    public static func satisfies(_ sample: NormalizedBox, objects: [NormalizedBox], _ c: Caffe_SampleConstraint) -> Bool {
        let jaccard = c.hasMinJaccardOverlap || c.hasMaxJaccardOverlap
        let sampleCoverage = c.hasMinSampleCoverage || c.hasMaxSampleCoverage
        let objectCoverage = c.hasMinObjectCoverage || c.hasMaxObjectCoverage
        if !jaccard && !sampleCoverage && !objectCoverage { return true }
        func within(_ value: Float, _ hasMin: Bool, _ minimum: Float, _ hasMax: Bool, _ maximum: Float) -> Bool {
            !(hasMin && value < minimum) && !(hasMax && value > maximum)
        }
        for object in objects {
            if jaccard, !within(sample.jaccardOverlap(object), c.hasMinJaccardOverlap, c.minJaccardOverlap,
                                c.hasMaxJaccardOverlap, c.maxJaccardOverlap) { continue }
            if sampleCoverage, !within(sample.coverage(by: object), c.hasMinSampleCoverage, c.minSampleCoverage,
                                       c.hasMaxSampleCoverage, c.maxSampleCoverage) { continue }
            if objectCoverage, !within(object.coverage(by: sample), c.hasMinObjectCoverage, c.minObjectCoverage,
                                       c.hasMaxObjectCoverage, c.maxObjectCoverage) { continue }
            return true
        }
        return false
    }

    /// `GenerateBatchSamples`: the kept boxes of every sampler that uses the original image, in order.
    public func samples(objects: [NormalizedBox], using generator: inout MersenneTwister) -> [NormalizedBox] {
        var kept: [NormalizedBox] = []
        for batch in samplers where batch.useOriginalImage {
            var found = 0
            for _ in 0..<batch.maxTrials {
                if batch.hasMaxSample, found >= batch.maxSample { break }
                let sample = CropSampler.sampleBox(batch.sampler, using: &generator).located(in: .unit)
                if CropSampler.satisfies(sample, objects: objects, batch.sampleConstraint) {
                    found += 1
                    kept.append(sample)
                }
            }
        }
        return kept
    }
}

extension MersenneTwister {
    /// A uniform draw in `low…high` (Caffe's `caffe_rng_uniform`): `low + (high − low)·u` with
    /// `u = next() / 2³²`.
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        let u = Float(Double(next()) / 4_294_967_296.0)
        return min(high, low + (high - low) * u)
    }
}
