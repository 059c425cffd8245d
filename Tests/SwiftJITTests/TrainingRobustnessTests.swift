import Foundation
import Testing
import SwiftJIT

/// `swiftjit train` never loses work: signals (Caffe's -sigint_effect/-sighup_effect, and SIGTERM)
/// end a run with a snapshot and exit 0; a kill -9 at any moment — during a snapshot write too —
/// leaves only complete snapshots, and resuming from the latest reaches bit for bit the weights of
/// an uninterrupted run; a snapshot pair resumes wherever it is moved; a full disk fails with a
/// clear error and leaves the previous snapshot intact.
///
/// All on the zoo's LeNet (431,080 parameters: 1.7 MB snapshots) fed from the golden 64-record
/// MNIST LMDB at its batch size, 64, so every iteration reads the whole LMDB and a resumed run
/// reads what an uninterrupted one reads (Caffe, like us, restarts a Data layer's cursor on resume).
@Suite("training survives signals, kill -9, moves and a full disk", .serialized)
struct TrainingRobustnessTests {
    static let golden = CompileCommandTests.shared.appendingPathComponent("golden/train")
    /// One kernel cache for the suite: every run after the first links its kernels from disk.
    static let kernels = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-robust-kernels-\(getpid())")

    /// A folder with LeNet's train net (reading the golden test LMDB by absolute path) and a solver.
    static func folder(maxIter: Int, snapshot: Int, prefix: String = "snap") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-robust-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        var net = try String(contentsOf: CompileCommandTests.shared.appendingPathComponent("zoo/mnist/lenet_train_test.prototxt"), encoding: .utf8)
        net = net.replacingOccurrences(of: "\"examples/mnist/mnist_train_lmdb\"", with: "\"\(golden.appendingPathComponent("data/test_lmdb").path)\"")
        #expect(net.contains("batch_size: 64") && net.contains("test_lmdb"))
        try net.write(to: url.appendingPathComponent("train_test.prototxt"), atomically: true, encoding: .utf8)
        let solver = """
        net: "\(url.appendingPathComponent("train_test.prototxt").path)"
        base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.5 stepsize: 7
        display: 0 max_iter: \(maxIter) snapshot: \(snapshot) snapshot_prefix: "\(prefix.hasPrefix("/") ? prefix : url.appendingPathComponent(prefix).path)"
        random_seed: 1701 type: "SGD"
        """
        try solver.write(to: url.appendingPathComponent("solver.prototxt"), atomically: true, encoding: .utf8)
        return url
    }

    /// `swiftjit train` started in the background, its output in files (no pipe to fill up).
    final class Training {
        let process = Process()
        let log: URL

        init(_ arguments: [String], in folder: URL) throws {
            log = folder.appendingPathComponent("log-\(UInt32.random(in: 0...UInt32.max)).txt")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            process.executableURL = try CompileCommandTests.binary()
            process.arguments = ["train", "--plain"] + arguments
            process.environment = ProcessInfo.processInfo.environment.merging(["SWIFTJIT_CACHE_DIR": TrainingRobustnessTests.kernels.path]) { $1 }
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        /// Waits for the process to end; its exit status, or 128 + the signal that ended it.
        func wait() -> Int32 {
            process.waitUntilExit()
            return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        }
    }

    /// Polls `condition` every millisecond for up to `seconds`.
    static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            usleep(1000)
        }
        return condition()
    }

    /// The iterations a loss CSV has logged (its rows after the header).
    static func lines(_ url: URL) -> Int {
        max(0, ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n").count - 1)
    }

    /// The iterations of the snapshots (`.solverstate` files) in `folder`.
    static func snapshotIterations(_ folder: URL, prefix: String = "snap") throws -> [Int] {
        try FileManager.default.contentsOfDirectory(atPath: folder.path).compactMap { name in
            guard name.hasPrefix("\(prefix)_iter_"), name.hasSuffix(".solverstate") else { return nil }
            return Int(name.dropFirst("\(prefix)_iter_".count).dropLast(".solverstate".count))
        }.sorted()
    }

    /// Every snapshot in `folder` is whole: its state and the model it names read completely.
    static func expectCompleteSnapshots(_ folder: URL) throws {
        for iteration in try snapshotIterations(folder) {
            let statePath = folder.appendingPathComponent("snap_iter_\(iteration).solverstate").path
            let state = try CaffeFiles.loadSolverState(path: statePath)
            #expect(Int(state.iter) == iteration)
            #expect(state.learnedNet == "snap_iter_\(iteration).caffemodel")
            let model = try CaffeFiles.loadWeights(path: Snapshot.modelPath(forState: statePath, learnedNet: state.learnedNet))
            #expect(model.layer.contains { $0.name == "ip2" && $0.blobs.count == 2 && $0.blobs[0].data.count == 5000 && $0.blobs[0].shape.dim == [10, 500] })
        }
    }

    /// The reference: 40 iterations, uninterrupted; its final caffemodel's bytes (run once).
    static let reference: Result<Data, any Error> = Result(catching: {
        let run = try TrainingRobustnessTests.folder(maxIter: 40, snapshot: 4)
        defer { try? FileManager.default.removeItem(at: run) }
        let training = try Training(["--solver", run.appendingPathComponent("solver.prototxt").path], in: run)
        let status = training.wait()
        guard status == 0 else { throw CompileCommandTests.Missing(what: "a reference run (exit \(status)): \(training.output)") }
        return try Data(contentsOf: run.appendingPathComponent("snap_iter_40.caffemodel"))
    })

    @Test("SIGTERM writes a snapshot and exits 0; SIGHUP snapshots and goes on; --sigterm-effect none ignores SIGTERM")
    func signals() throws {
        let folder = try Self.folder(maxIter: 1_000_000, snapshot: 0)
        defer { try? FileManager.default.removeItem(at: folder) }
        let csv = folder.appendingPathComponent("loss.csv")
        let solver = folder.appendingPathComponent("solver.prototxt").path

        let run = try Training(["--solver", solver, "--loss-csv", csv.path], in: folder)
        #expect(Self.waitFor(120) { Self.lines(csv) >= 2 }, "training did not start: \(run.output)")
        kill(run.process.processIdentifier, SIGHUP)
        #expect(Self.waitFor(30) { ((try? Self.snapshotIterations(folder)) ?? []).count == 1 }, "no snapshot after SIGHUP: \(run.output)")
        let afterHangup = Self.lines(csv)
        #expect(Self.waitFor(30) { Self.lines(csv) > afterHangup + 2 }, "training stopped after SIGHUP")
        kill(run.process.processIdentifier, SIGTERM)
        #expect(run.wait() == 0, "\(run.output)")
        let iterations = try Self.snapshotIterations(folder)
        #expect(iterations.count == 2 && iterations.last == Self.lines(csv), "\(iterations) after \(Self.lines(csv)) iterations")
        #expect(run.output.contains("SIGTERM: stopping after this iteration and writing a snapshot"))
        try Self.expectCompleteSnapshots(folder)

        // The second run snapshots under its own prefix: under load both runs may stop at the same
        // iteration, and one file name would then hide the other run's snapshot.
        let csv2 = folder.appendingPathComponent("loss2.csv")
        let solver2 = folder.appendingPathComponent("solver2.prototxt")
        try String(contentsOfFile: solver, encoding: .utf8)
            .replacingOccurrences(of: folder.appendingPathComponent("snap").path, with: folder.appendingPathComponent("second").path)
            .write(to: solver2, atomically: true, encoding: .utf8)
        let ignoring = try Training(["--solver", solver2.path, "--loss-csv", csv2.path, "--sigterm-effect", "none"], in: folder)
        #expect(Self.waitFor(120) { Self.lines(csv2) >= 2 })
        kill(ignoring.process.processIdentifier, SIGTERM)
        let afterTerm = Self.lines(csv2)
        #expect(Self.waitFor(30) { Self.lines(csv2) > afterTerm + 2 }, "SIGTERM was not ignored")
        kill(ignoring.process.processIdentifier, SIGINT)  // Caffe's default sigint_effect: stop
        #expect(ignoring.wait() == 0, "\(ignoring.output)")
        #expect(try Self.snapshotIterations(folder, prefix: "second") == [Self.lines(csv2)], "SIGINT stops with one snapshot of the last iteration")
        #expect(try Self.snapshotIterations(folder) == iterations, "the first run's snapshots are untouched")

        let refused = try CompileCommandTests.run(["train", "--solver", solver, "--sigterm-effect", "later"])
        #expect(refused.status != 0 && refused.err.contains("sigterm-effect"))
    }

    @Test("kill -9 at random moments, during snapshot writes too: only complete snapshots, and resuming reaches the same weights bit for bit")
    func killAndResume() throws {
        let reference = try Self.reference.get()
        let folder = try Self.folder(maxIter: 40, snapshot: 4)
        defer { try? FileManager.default.removeItem(at: folder) }
        let solver = folder.appendingPathComponent("solver.prototxt").path
        let csv = folder.appendingPathComponent("loss.csv")
        var generator = SystemRandomNumberGenerator()
        var kills = 0, duringWrites = 0, resumes = 0
        for attempt in 0..<12 {
            // A killed write leaves its hidden temporary file (never taken for a snapshot); clear
            // them so the next sighting is of a write in progress.
            for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.contains(".tmp-") {
                try FileManager.default.removeItem(at: folder.appendingPathComponent(name))
            }
            let latest = try Self.snapshotIterations(folder).last
            let resume = latest.map { ["--snapshot", folder.appendingPathComponent("snap_iter_\($0).solverstate").path] } ?? []
            if latest != nil { resumes += 1 }
            try? FileManager.default.removeItem(at: csv)
            let run = try Training(["--solver", solver, "--loss-csv", csv.path] + resume, in: folder)
            if attempt >= 6 || latest == 40 {
                #expect(run.wait() == 0, "\(run.output)")
                break
            }
            #expect(Self.waitFor(120) { FileManager.default.fileExists(atPath: csv.path) }, "training did not start: \(run.output)")
            if attempt % 2 == 0 {
                // The moment a snapshot's temporary file appears: in the middle of writing it.
                let writing = Self.waitFor(60) {
                    ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).contains { $0.contains(".tmp-") }
                }
                if writing { duringWrites += 1 }
            } else {
                // After the next complete snapshot (so each such kill leaves one more to resume
                // from, however loaded the machine), at a random moment: about 0 to 12 iterations on.
                _ = Self.waitFor(120) { ((try? Self.snapshotIterations(folder).last) ?? nil).map { $0 > (latest ?? 0) } ?? false }
                usleep(UInt32.random(in: 0...600_000, using: &generator))
                if try Self.snapshotIterations(folder).last == 40 {
                    #expect(run.wait() == 0, "\(run.output)")  // it finished before the kill
                    break
                }
            }
            kill(run.process.processIdentifier, SIGKILL)
            #expect(run.wait() == 128 + SIGKILL)
            kills += 1
            try Self.expectCompleteSnapshots(folder)
        }
        #expect(kills >= 3 && duringWrites >= 1 && resumes >= 2, "\(kills) kills, \(duringWrites) during a snapshot write, \(resumes) resumes")
        let final = try Data(contentsOf: folder.appendingPathComponent("snap_iter_40.caffemodel"))
        #expect(final == reference, "the resumed run's weights differ from the uninterrupted run's")
    }

    @Test("a snapshot pair moved to another folder resumes, from any working directory, to the same final weights")
    func movedSnapshot() throws {
        let reference = try Self.reference.get()
        let original = try Self.folder(maxIter: 8, snapshot: 8)
        defer { try? FileManager.default.removeItem(at: original) }
        let first = try Training(["--solver", original.appendingPathComponent("solver.prototxt").path], in: original)
        #expect(first.wait() == 0, "\(first.output)")

        let moved = try Self.folder(maxIter: 40, snapshot: 8)
        defer { try? FileManager.default.removeItem(at: moved) }
        let elsewhere = moved.appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        for file in ["snap_iter_8.caffemodel", "snap_iter_8.solverstate"] {
            try FileManager.default.moveItem(at: original.appendingPathComponent(file), to: elsewhere.appendingPathComponent(file))
        }
        try FileManager.default.removeItem(at: original)
        let resumed = try CompileCommandTests.run(["train", "--plain", "--solver", moved.appendingPathComponent("solver.prototxt").path,
                                                   "--snapshot", elsewhere.appendingPathComponent("snap_iter_8.solverstate").path],
                                                  kernelCache: Self.kernels)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(try Data(contentsOf: moved.appendingPathComponent("snap_iter_40.caffemodel")) == reference)

        // A state written with an absolute learned_net (as before, and as Caffe) still resumes
        // once moved: its caffemodel is found beside it.
        var state = try CaffeFiles.loadSolverState(path: elsewhere.appendingPathComponent("snap_iter_8.solverstate").path)
        state.learnedNet = "/no/such/folder/snap_iter_8.caffemodel"
        try CaffeFiles.write(state, to: elsewhere.appendingPathComponent("snap_iter_8.solverstate").path)
        #expect(Snapshot.modelPath(forState: elsewhere.appendingPathComponent("snap_iter_8.solverstate").path, learnedNet: state.learnedNet)
                == elsewhere.appendingPathComponent("snap_iter_8.caffemodel").path)
    }

    /// Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN, as in CI's container).
    static let canMount: Bool = {
        let point = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-mount-probe-\(getpid())")
        try? FileManager.default.createDirectory(at: point, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: point) }
        guard mount("tmpfs", point.path, "tmpfs", 0, "size=64k") == 0 else { return false }
        umount(point.path)
        return true
    }()

    @Test("a full disk while writing a snapshot: a clear error, exit 1, the previous snapshot intact and no stray files",
          .enabled(if: canMount, "skipped: this process may not mount a tmpfs (needs root with CAP_SYS_ADMIN)"))
    func fullDisk() throws {
        let disk = FileManager.default.temporaryDirectory.appendingPathComponent("swiftjit-full-disk-\(getpid())")
        try FileManager.default.createDirectory(at: disk, withIntermediateDirectories: true)
        // LeNet's caffemodel and solverstate are 1.7 MB each: one pair fits in 5 MB, a second does not.
        #expect(mount("tmpfs", disk.path, "tmpfs", 0, "size=5m") == 0)
        defer {
            umount(disk.path)
            try? FileManager.default.removeItem(at: disk)
        }
        let folder = try Self.folder(maxIter: 8, snapshot: 2, prefix: disk.appendingPathComponent("snap").path)
        defer { try? FileManager.default.removeItem(at: folder) }
        let run = try CompileCommandTests.run(["train", "--plain", "--solver", folder.appendingPathComponent("solver.prototxt").path],
                                              kernelCache: Self.kernels)
        #expect(run.status == 1)
        #expect(run.err.contains("snap_iter_4.") && run.err.contains("No space left on device") && run.err.contains("the disk is full"), "\(run.err)")
        #expect(try Self.snapshotIterations(disk) == [2])
        try Self.expectCompleteSnapshots(disk)
        let stray = try FileManager.default.contentsOfDirectory(atPath: disk.path).filter { $0.contains(".tmp-") }
        #expect(stray.isEmpty, "\(stray)")
    }
}
