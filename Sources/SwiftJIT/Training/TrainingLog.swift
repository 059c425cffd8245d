import Foundation

/// Thread-safe flags a signal handler sets for the training loop, which reads them after each
/// iteration's update (Caffe's `SolverAction`): stop — snapshot and stop, so no work is lost
/// (`sigint_effect: stop`) — or snapshot once and go on (`sighup_effect: snapshot`).
public final class StopRequest: @unchecked Sendable {
    private let lock = NSLock()
    private var requested = false
    private var snapshotRequested = false

    public init() {}

    /// Asks for one snapshot after the current iteration; training goes on.
    public func requestSnapshot() {
        lock.lock()
        snapshotRequested = true
        lock.unlock()
    }

    /// Whether a snapshot was asked for since the last call (and clears the request).
    public func takeSnapshotRequest() -> Bool {
        lock.lock()
        defer { snapshotRequested = false; lock.unlock() }
        return snapshotRequested
    }

    public func request() {
        lock.lock()
        requested = true
        lock.unlock()
    }

    public var isRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return requested
    }
}

/// How a training run is configured beyond its solver file.
public struct TrainingOptions {
    /// Caffemodels to copy weights from, by layer name, in order (`--weights a,b`).
    public var weights: [String] = []
    /// A `.solverstate` to resume from (`--snapshot`).
    public var resume: String?
    /// Writes `iteration,loss,lr` per iteration (the iteration's own loss, not smoothed).
    public var lossCSV: String?
    /// Where relative paths in the solver and nets resolve (Caffe: the working directory); the
    /// solver's folder is tried second.
    public var baseDirectory: String?
    /// Values for Input/MemoryData tops, for library users.
    public var provider: TrainingFeeds.Provider?
    /// Leaves Input, MemoryData and DummyData tops to the nets (`LayerwiseNet` solvers, where the
    /// caller writes them in place); only Data layers are fed.
    public var dataInPlace = false
    /// Adjusts each net's graph builder before it builds (net 0: the train net, i + 1: test net
    /// i), e.g. to install caller-implemented layers' shape hook.
    public var prepareGraph: ((_ net: Int, _ builder: inout GraphBuilder) -> Void)?
    public var stop = StopRequest()
    /// Progress output: a live line on a terminal, plain log lines otherwise, or nothing.
    public enum Progress: Sendable { case automatic, lines, quiet }
    public var progress: Progress = .automatic
    /// Receives every log line (default: standard output).
    public var write: (String) -> Void = { line in FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    public init() {}
}

/// Training output: Caffe-style log lines at each `display`, a live progress line (iteration,
/// smoothed loss, lr, iterations/s, ETA) when standard output is a terminal, and the loss CSV.
final class TrainingLog {
    private let options: TrainingOptions
    private let maxIterations: Int
    private let live: Bool
    private var csv: FileHandle?
    private var started = Date()
    private var startIteration = 0

    init(options: TrainingOptions, maxIterations: Int) {
        self.options = options
        self.maxIterations = maxIterations
        live = options.progress == .automatic && isatty(STDOUT_FILENO) == 1
    }

    func start(from iteration: Int) {
        started = Date()
        startIteration = iteration
        if let path = options.lossCSV {
            FileManager.default.createFile(atPath: path, contents: Data("iteration,loss,lr\n".utf8))
            csv = FileHandle(forWritingAtPath: path)
            csv?.seekToEndOfFile()
        }
    }

    private func line(_ text: String) {
        guard options.progress != .quiet else { return }
        if live {
            // Overwrite the progress line; the next record() draws it again below.
            FileHandle.standardOutput.write(Data(("\r\u{1B}[2K" + text + "\n").utf8))
        } else {
            options.write(text)
        }
    }

    func note(_ text: String) { line(text) }

    func display(iteration: Int, smoothedLoss: Float, outputs: [String: NDArray]) {
        line("Iteration \(iteration) (\(String(format: "%.2f", rate(at: iteration))) iter/s), loss = \(smoothedLoss)")
        for (name, value) in outputs.sorted(by: { $0.key < $1.key }) where value.count == 1 {
            line("    Train net output: \(name) = \(value.data[0])")
        }
    }

    func test(index: Int, iteration: Int, means: [String: Float]) {
        line("Iteration \(iteration), Testing net (#\(index))")
        for (name, value) in means.sorted(by: { $0.key < $1.key }) { line("    Test net output: \(name) = \(value)") }
    }

    func record(iteration: Int, loss: Float, smoothed: Float, rate lr: Float) throws {
        csv?.write(Data("\(iteration),\(loss),\(lr)\n".utf8))
        guard live else { return }
        let done = iteration + 1
        let speed = rate(at: done)
        let remaining = speed > 0 ? Double(maxIterations - done) / speed : 0
        let eta = String(format: "%d:%02d:%02d", Int(remaining) / 3600, Int(remaining) / 60 % 60, Int(remaining) % 60)
        FileHandle.standardOutput.write(Data("\r\u{1B}[2Kiter \(done)/\(maxIterations)  loss \(String(format: "%.4f", smoothed))  lr \(lr)  \(String(format: "%.1f", speed)) it/s  ETA \(eta)".utf8))
    }

    func finish() {
        csv?.closeFile()
        csv = nil
        if live { FileHandle.standardOutput.write(Data("\n".utf8)) }
    }

    private func rate(at iteration: Int) -> Double {
        let elapsed = Date().timeIntervalSince(started)
        return elapsed > 0 ? Double(iteration - startIteration) / elapsed : 0
    }
}
