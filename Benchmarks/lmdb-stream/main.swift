// lmdb-stream: writes a large synthetic LMDB of Datums, then streams it through a prefetching
// DataLayerFeed and reports images/s and resident memory sampled over time (it must stay flat).
//
//   swift build -c release --product LMDBStreamBenchmark
//   .build/release/LMDBStreamBenchmark write  --path /tmp/swiftjit-lmdb-stream --records 16000
//   .build/release/LMDBStreamBenchmark stream --path /tmp/swiftjit-lmdb-stream [--epochs 1] [--prefetch 4]
//                                             [--consumer-ms 20] [--samples rss.csv]
//   .build/release/LMDBStreamBenchmark read   --path /tmp/swiftjit-lmdb-stream [--no-release]
//
// `read` streams records through LMDBReader and the Datum decoder only; with --no-release it never
// drops mapped pages, to show what madvise(MADV_DONTNEED) saves.
//
// --consumer-ms simulates a net that spends that long on each batch, so the prefetch queue fills up.
// Writing and streaming are separate runs so the streaming process's peak RSS (VmHWM) covers
// streaming only. See Benchmarks/README.md for recorded numbers.
import CaffeFormat
import DataPipeline
import Foundation

struct Options {
    var command = ""
    var path = "/tmp/swiftjit-lmdb-stream"
    var records = 16_000
    var channels = 3, height = 224, width = 224
    var batchSize = 64
    var epochs = 1.0
    var prefetch = 4
    var releasePages = true
    var samplesPath: String?
    var consumerMilliseconds = 0.0

    init(_ arguments: [String]) throws {
        var rest = arguments.dropFirst()
        guard let command = rest.popFirst(), ["write", "stream", "read"].contains(command) else { throw Usage() }
        self.command = command
        while let flag = rest.popFirst() {
            func value() throws -> String {
                guard let next = rest.popFirst() else { throw Usage() }
                return next
            }
            switch flag {
            case "--path": path = try value()
            case "--records": records = Int(try value()) ?? records
            case "--shape":
                let dims = try value().split(separator: "x").compactMap { Int($0) }
                guard dims.count == 3 else { throw Usage() }
                (channels, height, width) = (dims[0], dims[1], dims[2])
            case "--batch": batchSize = Int(try value()) ?? batchSize
            case "--epochs": epochs = Double(try value()) ?? epochs
            case "--prefetch": prefetch = Int(try value()) ?? prefetch
            case "--no-release": releasePages = false
            case "--samples": samplesPath = try value()
            case "--consumer-ms": consumerMilliseconds = Double(try value()) ?? 0
            default: throw Usage()
            }
        }
    }

    struct Usage: Error, CustomStringConvertible {
        var description: String {
            "usage: LMDBStreamBenchmark write|stream|read [--path P] [--records N] [--shape 3x224x224] [--batch 64] "
                + "[--epochs E] [--prefetch 4] [--consumer-ms 0] [--no-release] [--samples out.csv]"
        }
    }
}

/// Resident-set samples of this process, read from /proc/self/status every `interval`.
final class MemorySampler: @unchecked Sendable {
    struct Sample { var seconds: Double; var rss: Int; var anon: Int; var file: Int }
    private let lock = NSLock()
    private var samples: [Sample] = []
    private var running = true
    private let start = Date()

    func run(every interval: TimeInterval) {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                let status = MemorySampler.status()
                let sample = Sample(seconds: Date().timeIntervalSince(start), rss: status["VmRSS"] ?? 0,
                                    anon: status["RssAnon"] ?? 0, file: status["RssFile"] ?? 0)
                lock.withLock { samples.append(sample) }
                Thread.sleep(forTimeInterval: interval)
            }
        }
    }

    func stop() -> [Sample] {
        lock.withLock {
            running = false
            return samples
        }
    }

    /// kB values of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile, …).
    static func status() -> [String: Int] {
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/status") else { return [:] }
        defer { try? handle.close() }
        let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        var values: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let number = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
            if let number { values[String(parts[0])] = number }
        }
        return values
    }
}

func megabytes(_ kilobytes: Int) -> String { String(format: "%.1f MB", Double(kilobytes) / 1024) }

func write(_ options: Options) throws {
    if FileManager.default.fileExists(atPath: options.path) {
        try FileManager.default.removeItem(atPath: options.path)
    }
    let writer = try LMDBWriter(path: options.path, initialMapSize: 4 << 30)
    writer.recordsPerCommit = 500
    let count = options.channels * options.height * options.width
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    var pixels = [UInt8](repeating: 0, count: count)
    let started = Date()
    for index in 0..<options.records {
        pixels.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<words.count {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                words[i] = state
            }
        }
        var datum = Caffe_Datum()
        datum.channels = Int32(options.channels)
        datum.height = Int32(options.height)
        datum.width = Int32(options.width)
        datum.data = Data(pixels)
        datum.label = Int32(index % 1000)
        try writer.put(key: String(format: "%08d", index), datum: datum)
        if index % 2000 == 1999 { print("  wrote \(index + 1) records") }
    }
    try writer.finish()
    let seconds = Date().timeIntervalSince(started)
    let size = (try? FileManager.default.attributesOfItem(atPath: options.path + "/data.mdb")[.size] as? Int) ?? 0
    print(String(format: "wrote %d records of %dx%dx%d uint8 in %.1f s: data.mdb is %.2f GB",
                 options.records, options.channels, options.height, options.width, seconds, Double(size) / 1e9))
}

/// Prints min/max RSS after the first second, the kernel's peak, and RSS at a few moments.
func report(_ samples: [MemorySampler.Sample]) {
    let peak = MemorySampler.status()["VmHWM"] ?? 0
    let steady = samples.filter { $0.seconds > 1 }
    guard let low = steady.map(\.rss).min(), let high = steady.map(\.rss).max() else { return }
    print("RSS after the first second: min \(megabytes(low)), max \(megabytes(high)); peak (VmHWM) \(megabytes(peak))")
    let fileHigh = steady.map(\.file).max() ?? 0, anonHigh = steady.map(\.anon).max() ?? 0
    print("  max RssAnon \(megabytes(anonHigh)), max RssFile (mapped LMDB pages) \(megabytes(fileHigh))")
    for fraction in [0.1, 0.25, 0.5, 0.75, 1.0] {
        let sample = steady[min(steady.count - 1, Int(Double(steady.count - 1) * fraction))]
        print(String(format: "  t=%6.1f s  RSS %@", sample.seconds, megabytes(sample.rss)))
    }
}

func read(_ options: Options) throws {
    let sampler = MemorySampler()
    sampler.run(every: 0.1)
    let reader = try LMDBReader(path: options.path)
    if !options.releasePages { reader.releaseInterval = .max }
    let started = Date()
    var bytes = 0
    for _ in 0..<reader.count {
        let image = try DatumImage(record: try reader.read())
        bytes += image.count
    }
    let seconds = Date().timeIntervalSince(started)
    let samples = sampler.stop()
    print(String(format: "read %d records (%.2f GB of pixels) in %.1f s: %.0f records/s, releasing mapped pages: %@",
                 reader.count, Double(bytes) / 1e9, seconds, Double(reader.count) / seconds,
                 options.releasePages ? "yes" : "no"))
    report(samples)
}

func stream(_ options: Options) throws {
    let reader = try LMDBReader(path: options.path)
    let records = reader.count
    reader.close()
    let size = (try? FileManager.default.attributesOfItem(atPath: options.path + "/data.mdb")[.size] as? Int) ?? 0

    var layer = Caffe_LayerParameter()
    layer.name = "data"
    layer.type = "Data"
    layer.dataParam.source = options.path
    layer.dataParam.backend = .lmdb
    layer.dataParam.batchSize = UInt32(options.batchSize)
    layer.transformParam.mirror = true
    layer.transformParam.cropSize = UInt32(min(options.height, options.width) * 13 / 14)  // 224 → 208
    layer.transformParam.meanValue = [104, 117, 123]

    let sampler = MemorySampler()
    sampler.run(every: 0.1)
    let batches = Int((Double(records) * options.epochs / Double(options.batchSize)).rounded(.up))
    let feed = try DataLayerFeed(layer: layer, phase: .train, seed: 1, prefetch: options.prefetch)
    let started = Date()
    var checksum: Float = 0
    var waited = 0.0
    for index in 0..<batches {
        let asked = Date()
        let batch = try feed.next()
        waited += Date().timeIntervalSince(asked)
        checksum += batch.data[index % batch.data.count] + batch.labels[0]
        if options.consumerMilliseconds > 0 { Thread.sleep(forTimeInterval: options.consumerMilliseconds / 1000) }
        if index % 50 == 49 {
            let status = MemorySampler.status()
            print(String(format: "  batch %d/%d  %.0f images/s  RSS %@", index + 1, batches,
                         Double((index + 1) * options.batchSize) / Date().timeIntervalSince(started),
                         megabytes(status["VmRSS"] ?? 0)))
        }
    }
    let seconds = Date().timeIntervalSince(started)
    feed.close()
    let samples = sampler.stop()
    let images = batches * options.batchSize
    print(String(format: "streamed %d images (%d batches of %@) from a %.2f GB LMDB of %d records in %.1f s",
                 images, batches, "\(feed.batchShape)", Double(size) / 1e9, records, seconds))
    print(String(format: "throughput: %.0f images/s (%.0f MB/s of records); consumer waited %.1f s of %.1f s",
                 Double(images) / seconds, Double(size) / 1e6 * options.epochs / seconds, waited, seconds))
    report(samples)
    if let path = options.samplesPath {
        let rows = ["seconds,rss_kb,rss_anon_kb,rss_file_kb"] + samples.map { "\($0.seconds),\($0.rss),\($0.anon),\($0.file)" }
        try rows.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
    print("checksum \(checksum)")
}

do {
    let options = try Options(CommandLine.arguments)
    switch options.command {
    case "write": try write(options)
    case "read": try read(options)
    default: try stream(options)
    }
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
