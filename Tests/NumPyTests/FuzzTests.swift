import Foundation
import Testing
@testable import NumPy

/// Truncated and corrupted inputs must throw a `NumPyError`, never crash, hang or throw anything
/// else. Seeded, so failures reproduce.
@Suite("NumPy fuzz: truncation and byte flips")
struct FuzzTests {
    enum Kind { case npy, npz }

    struct Outcome { var ok = 0; var failed = 0 }

    /// Reads `bytes`, recording (not crashing on) any error; a non-`NumPyError` is a test failure.
    static func attempt(_ bytes: [UInt8], _ kind: Kind, _ label: String, _ outcome: inout Outcome) {
        do {
            switch kind {
            case .npy: _ = try NumPyFile.readArray(from: Data(bytes), name: "fuzz.npy")
            case .npz: _ = try NumPyFile.readArchive(from: Data(bytes), name: "fuzz.npz")
            }
            outcome.ok += 1
        } catch let e as NumPyError {
            #expect(e.description.hasPrefix(kind == .npy ? "fuzz.npy: " : "fuzz.npz: "), "\(label): \(e)")
            #expect(!e.message.isEmpty)
            outcome.failed += 1
        } catch {
            Issue.record("\(label): threw a non-NumPyError \(type(of: error)): \(error)")
        }
    }

    /// The corpus: our own STORED and DEFLATE archives, a v2 big-endian Fortran .npy, plain .npy
    /// files, and the Caffe golden conv grads when present.
    static func corpus() throws -> [(String, Kind, [UInt8])] {
        let entries: [(String, NDArray)] = [
            ("conv1/0", ramp([4, 3, 3, 3])), ("conv1/1", ramp([4])), ("loss", NDArray(scalar: 1.25)),
            ("inception_3a/1x1", ramp([2, 2, 3])),
        ]
        let stored = Array(try NumPyFile.encode(archive: entries))
        let deflated = try makeZip(entries.map { ($0.0 + ".npy", Array(try NumPyFile.encode($0.1))) }, deflate: true)
        let fortranBE = makeNPY(
            header: "{'descr': '>f8', 'fortran_order': True, 'shape': (3, 4), }\n",
            payload: (0 ..< 12).flatMap { i -> [UInt8] in
                let b = Double(i).bitPattern
                return (0 ..< 8).map { UInt8(truncatingIfNeeded: b >> (8 * (7 - $0))) }
            }, version: (2, 0))
        var corpus: [(String, Kind, [UInt8])] = [
            ("stored.npz", .npz, stored),
            ("deflated.npz", .npz, deflated),
            ("ramp.npy", .npy, Array(try NumPyFile.encode(ramp([3, 5, 7])))),
            ("scalar.npy", .npy, Array(try NumPyFile.encode(NDArray(scalar: 3)))),
            ("fortran_be_v2.npy", .npy, fortranBE),
        ]
        let golden = Fixtures.golden.appendingPathComponent("layers/conv_k3_basic/grads.npz")
        if let data = try? Data(contentsOf: golden) { corpus.append(("golden grads.npz", .npz, Array(data))) }
        return corpus
    }

    @Test("every truncation throws a NumPyError")
    func truncation() throws {
        var rng = SplitMix64(seed: 0x5EED_0001)
        for (name, kind, bytes) in try Self.corpus() {
            // Sanity: the intact file reads.
            var intact = Outcome()
            Self.attempt(bytes, kind, name, &intact)
            #expect(intact.ok == 1, "\(name) should read intact")

            // All lengths for small files; otherwise the first 128, the last 64 and ~200 random ones.
            var lengths = Set<Int>()
            if bytes.count <= 400 {
                lengths = Set(0 ..< bytes.count)
            } else {
                lengths.formUnion(0 ..< 128)
                lengths.formUnion(bytes.count - 64 ..< bytes.count)
                while lengths.count < 392 { lengths.insert(Int.random(in: 0 ..< bytes.count, using: &rng)) }
            }
            var outcome = Outcome()
            for n in lengths.sorted() {
                Self.attempt(Array(bytes.prefix(n)), kind, "\(name) truncated to \(n)", &outcome)
            }
            #expect(outcome.ok == 0, "\(name): \(outcome.ok) truncated copies were accepted")
            #expect(outcome.failed == lengths.count)
        }
    }

    @Test("random byte flips (500 seeded trials per file) succeed or throw, never crash")
    func byteFlips() throws {
        var rng = SplitMix64(seed: 0x5EED_0002)
        for (name, kind, bytes) in try Self.corpus() {
            var outcome = Outcome()
            for trial in 0 ..< 500 {
                var mutated = bytes
                let flips = Int.random(in: 1 ... 4, using: &rng)
                for _ in 0 ..< flips {
                    // Half the trials aim at the structure (the .npy header, or the zip central
                    // directory and end record), where parsers do their work.
                    let region: Range<Int>
                    if trial % 2 == 0 {
                        region = kind == .npy ? 0 ..< min(bytes.count, 140) : max(0, bytes.count - 300) ..< bytes.count
                    } else {
                        region = 0 ..< bytes.count
                    }
                    let at = Int.random(in: region, using: &rng)
                    mutated[at] ^= UInt8.random(in: 1 ... 255, using: &rng)
                }
                Self.attempt(mutated, kind, "\(name) trial \(trial)", &outcome)
            }
            #expect(outcome.ok + outcome.failed == 500)
            #expect(outcome.failed > 0, "\(name): no corruption was detected in 500 trials")
        }
    }

    @Test("mutated .npy members inside a valid archive (CRC recomputed) succeed or throw")
    func mutatedMembers() throws {
        var rng = SplitMix64(seed: 0x5EED_0003)
        let member = Array(try NumPyFile.encode(ramp([2, 3, 4])))
        var outcome = Outcome()
        for trial in 0 ..< 500 {
            var mutated = member
            if trial % 3 == 0 {
                mutated.removeLast(Int.random(in: 1 ..< member.count, using: &rng))
            } else {
                for _ in 0 ..< Int.random(in: 1 ... 3, using: &rng) {
                    mutated[Int.random(in: 0 ..< min(member.count, 128), using: &rng)] ^= UInt8.random(in: 1 ... 255, using: &rng)
                }
            }
            let zip = try makeZip([("a/b.npy", mutated)], deflate: trial % 2 == 0)
            Self.attempt(zip, .npz, "member trial \(trial)", &outcome)
        }
        #expect(outcome.failed > 0)
    }

    @Test("random garbage never crashes")
    func garbage() {
        var rng = SplitMix64(seed: 0x5EED_0004)
        var outcome = Outcome()
        for trial in 0 ..< 300 {
            var bytes = (0 ..< Int.random(in: 0 ... 512, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            // Give some inputs plausible magic numbers so parsing gets further.
            if trial % 3 == 1, bytes.count >= 10 { bytes.replaceSubrange(0 ..< 8, with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]) }
            if trial % 3 == 2, bytes.count >= 22 { bytes.replaceSubrange(bytes.count - 22 ..< bytes.count - 18, with: [0x50, 0x4B, 5, 6]) }
            Self.attempt(bytes, .npy, "garbage \(trial)", &outcome)
            Self.attempt(bytes, .npz, "garbage \(trial)", &outcome)
        }
        #expect(outcome.ok + outcome.failed == 600)
    }
}
