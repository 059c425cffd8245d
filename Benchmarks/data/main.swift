// data: ImageData decoding throughput and memory, and convert-imageset throughput, on synthetic
// ImageNet-sized JPEGs (256×256, quality 95), transformed as CaffeNet trains: crop 227, mirror,
// mean values.
//
//   swift build -c release --product DataBenchmark
//   .build/release/DataBenchmark [--images 2000] [--folder /tmp/swiftjit-data-bench] [--batch 64]
//
// It reports, each as images/s:
//   single-thread  decode + transform on one thread (our decoder): the stand-in for Caffe's single
//                  prefetch thread, which decodes and transforms serially (no Caffe build here)
//   imagedata      an ImageData layer through DataLayerFeed (prefetch 4, decoding on every core),
//                  with the process's peak RSS
//   convert        ImageSetConversion (swiftjit convert-imageset) to an LMDB, raw pixels
// See BENCHMARKS.md for recorded numbers.
import CaffeFormat
import DataPipeline
import Foundation

var images = 2000
var folder = "/tmp/swiftjit-data-bench"
var batchSize = 64
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--images": images = Int(arguments.popFirst() ?? "") ?? images
    case "--folder": folder = arguments.popFirst() ?? folder
    case "--batch": batchSize = Int(arguments.popFirst() ?? "") ?? batchSize
    default:
        FileHandle.standardError.write(Data("usage: DataBenchmark [--images N] [--folder PATH] [--batch N]\n".utf8))
        exit(2)
    }
}

func peakRSSMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Double(line.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
    }
    return 0
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

do {
    // 1. The images: smooth gradients with noise, so JPEG sizes are photo-like (~20–40 KB).
    let imageFolder = (folder as NSString).appendingPathComponent("images")
    try? FileManager.default.removeItem(atPath: folder)
    try FileManager.default.createDirectory(atPath: imageFolder, withIntermediateDirectories: true)
    var generator = MersenneTwister(seed: 1)
    var lines: [String] = []
    var bytes = 0
    for index in 0..<images {
        var pixels = [UInt8](repeating: 0, count: 256 * 256 * 3)
        let phase = Int(generator.next() % 256)
        for y in 0..<256 {
            for x in 0..<256 {
                for c in 0..<3 {
                    let noise = Int(generator.next() % 24)
                    pixels[(y * 256 + x) * 3 + c] = UInt8(truncatingIfNeeded: (x * (c + 1) + y * (3 - c) / 2 + phase + noise) & 0xFF)
                }
            }
        }
        let jpeg = try ImageEncoder.jpeg(DecodedImage(channels: 3, height: 256, width: 256, pixels: pixels))
        bytes += jpeg.count
        let name = String(format: "%06d.jpg", index)
        try jpeg.write(to: URL(fileURLWithPath: (imageFolder as NSString).appendingPathComponent(name)))
        lines.append("\(name) \(index % 1000)")
    }
    let list = (folder as NSString).appendingPathComponent("list.txt")
    try lines.joined(separator: "\n").write(toFile: list, atomically: true, encoding: .utf8)
    print("images: \(images) JPEGs 256×256, mean \(bytes / images / 1024) KB; cores: \(ProcessInfo.processInfo.activeProcessorCount)")

    var layer = Caffe_LayerParameter()
    layer.name = "data"
    layer.type = "ImageData"
    layer.top = ["data", "label"]
    layer.imageDataParam.source = list
    layer.imageDataParam.rootFolder = imageFolder + "/"
    layer.imageDataParam.batchSize = UInt32(batchSize)
    layer.transformParam.cropSize = 227
    layer.transformParam.mirror = true
    layer.transformParam.meanValue = [104, 117, 123]
    let batches = images / batchSize

    // 2. One thread decoding and transforming, as Caffe's prefetch thread does.
    let single = try ImageListReader(layer: layer, phase: .train, seed: 1)
    single.decodingThreads = 1
    var batch = DataBatch(shape: single.batchShape)
    try single.fill(&batch)  // warm the page cache
    let singleTime = try seconds { for _ in 0..<batches { try single.fill(&batch) } }
    print(String(format: "single-thread: %.0f images/s", Double(batches * batchSize) / singleTime))

    // 3. The ImageData feed with prefetch and decoding on every core.
    let feed = try DataLayerFeed(layer: layer, phase: .train, seed: 1)
    _ = try feed.next()
    let feedTime = try seconds { for _ in 0..<batches { _ = try feed.next() } }
    feed.close()
    print(String(format: "imagedata: %.0f images/s, peak RSS %.0f MB", Double(batches * batchSize) / feedTime, peakRSSMegabytes()))

    // 4. convert-imageset to an LMDB.
    let database = (folder as NSString).appendingPathComponent("lmdb")
    let conversion = ImageSetConversion(root: imageFolder + "/", list: list, output: database)
    let convertTime = try seconds { _ = try conversion.run() }
    print(String(format: "convert: %.0f images/s", Double(images) / convertTime))
    try? FileManager.default.removeItem(atPath: folder)
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
