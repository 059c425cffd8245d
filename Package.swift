// swift-tools-version:6.0
// SwiftJIT: a Caffe-compatible, JIT-compiled deep-learning runtime.
// The target graph mirrors the compiler pipeline (see docs in ../shared/DESIGN.md and README.md):
// CaffeFormat → Graph → (Passes → Codegen) → Runtime → SwiftJIT → swiftjit CLI.
import PackageDescription

let package = Package(
    name: "SwiftJIT",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SwiftJIT", targets: ["SwiftJIT"]),
        .library(name: "CaffeFormat", targets: ["CaffeFormat"]),
        .library(name: "Graph", targets: ["Graph"]),
        .library(name: "NumPy", targets: ["NumPy"]),
        .executable(name: "swiftjit", targets: ["swiftjit"]),
        // The C API (include/swiftjit.h): libswiftjit.so, which the Python package loads too.
        .library(name: "swiftjit-c", type: .dynamic, targets: ["SwiftJITC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // The inference server (Sources/Serve): HTTP, logging, metrics, lifecycle.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(
            name: "CaffeFormat",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["Proto"]
        ),
        .target(name: "Graph", dependencies: ["CaffeFormat", "NumPy"]),
        .target(name: "Solvers"),
        .target(name: "Passes", dependencies: ["Graph", "CaffeFormat", "NumPy"]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CLLVM", path: "Sources/CLLVM"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        .systemLibrary(name: "CLMDB", path: "Sources/CLMDB"),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CLevelDB", path: "Sources/CLevelDB"),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5"),
        // Data layers: LMDB/LevelDB + Datum + Caffe's transformer, image lists, HDF5. Separate from
        // Runtime, which knows no protobuf.
        .target(name: "DataPipeline", dependencies: ["CaffeFormat", "CLMDB", "CLevelDB", "CHDF5", "CTurboJPEG", "CPNG", "CZlib"]),
        .executableTarget(name: "LMDBStreamBenchmark", dependencies: ["DataPipeline", "CaffeFormat"],
                          path: "Benchmarks/lmdb-stream"),
        .executableTarget(name: "DataBenchmark", dependencies: ["DataPipeline", "CaffeFormat"], path: "Benchmarks/data"),
        .target(name: "NumPy", dependencies: ["CZlib"]),
        .target(name: "Runtime", dependencies: ["COpenBLAS"], path: "Runtime"),
        .target(name: "Codegen", dependencies: ["CaffeFormat", "Graph", "NumPy", "CLLVM", "Runtime", "Solvers"]),
        .target(
            name: "Export",
            dependencies: ["CaffeFormat", "Graph", "NumPy", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["Proto"]
        ),
        .target(name: "SwiftJIT", dependencies: ["CaffeFormat", "Graph", "NumPy", "Solvers", "Codegen", "Runtime", "Export", "DataPipeline", "Passes"]),
        // What clients send the inference server (KServe v2 requests, Triton's config.pbtxt), decoded
        // without NIO or LLVM: Serve re-exports it, and the fuzz harnesses need only this.
        .target(name: "ServeProtocol"),
        // The KServe v2 / Triton HTTP inference server; knows SwiftJIT's public API, nothing of LLVM.
        .target(
            name: "Serve",
            dependencies: [
                "SwiftJIT", "ServeProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "swiftjit",
            dependencies: [
                "SwiftJIT", "Runtime", "Serve",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libFuzzer harnesses for every reader (Tests/Fuzz/README.md); tools/fuzz.sh builds them
        // with -sanitize=fuzzer,address, a plain build gets a replay-only binary.
        // Readers only (no Codegen, no NIO), so the instrumented build is quick enough for CI.
        .executableTarget(name: "swiftjit-fuzz", dependencies: ["CaffeFormat", "DataPipeline", "Graph", "NumPy", "ServeProtocol"],
                          path: "Tests/Fuzz/Harness"),
        .systemLibrary(name: "CSwiftJIT", path: "Sources/CSwiftJIT"),
        .target(name: "SwiftJITC", dependencies: ["SwiftJIT", "Runtime", "CSwiftJIT"]),
        .testTarget(name: "CaffeFormatTests", dependencies: ["CaffeFormat"]),
        .testTarget(name: "GraphTests", dependencies: ["Graph", "CaffeFormat", "NumPy"]),
        .testTarget(name: "NumPyTests", dependencies: ["NumPy"]),
        .testTarget(name: "DataPipelineTests", dependencies: ["DataPipeline", "CaffeFormat", "NumPy", "CPNG", "CTurboJPEG"]),
        .testTarget(name: "CodegenTests", dependencies: ["Codegen", "Runtime", "Graph", "CaffeFormat", "NumPy"]),
        .testTarget(name: "SwiftJITTests", dependencies: ["SwiftJIT"]),
        .testTarget(name: "ExportTests", dependencies: ["Export", "SwiftJIT"]),
        .testTarget(name: "ServeTests", dependencies: ["Serve", "SwiftJIT"]),
        .testTarget(name: "SolversTests", dependencies: ["Solvers"]),
        .testTarget(name: "TrainingTests", dependencies: ["Codegen", "Runtime", "Graph", "CaffeFormat", "NumPy", "Solvers"]),
        .testTarget(name: "PassesTests", dependencies: ["Passes", "Graph", "CaffeFormat", "NumPy", "Codegen", "Runtime"]),
    ]
)
