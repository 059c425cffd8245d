/// The JIT-compiled training net is what the `Trainer` drives.
extension TrainingNet: TrainableNet {}

extension Trainer {
    /// A trainer whose nets are compiled by SwiftJIT's JIT (`Compiler`), seeded by the
    /// solver's `random_seed` (dropout masks).
    public convenience init(solverPath: String, options: TrainingOptions = TrainingOptions(), compiler: Compiler) throws {
        let seed = try CaffeFiles.loadSolver(path: solverPath).randomSeed
        try self.init(solverPath: solverPath, options: options) { graph, parameters in
            try compiler.compileTraining(graph: graph, parameters: parameters, seed: seed >= 0 ? UInt64(seed) : 1701)
        }
    }
}
