import Foundation
import Testing
import SwiftJIT

/// The learning rate of every update in every golden training run equals Caffe's (losses.csv).
@Suite("solver schedules match Caffe")
struct SolverGoldenTests {
    static let train = CompileCommandTests.shared.appendingPathComponent("golden/train")

    @Test("lr of each of the 40 iterations, for all 12 golden solvers")
    func learningRates() throws {
        let cases = try FileManager.default.contentsOfDirectory(atPath: Self.train.path).filter {
            FileManager.default.fileExists(atPath: Self.train.appendingPathComponent("\($0)/solver.prototxt").path)
        }.sorted()
        #expect(cases.count == 12)
        for name in cases {
            let folder = Self.train.appendingPathComponent(name)
            let solverPath = folder.appendingPathComponent("solver.prototxt").path
            let hyper = try SolverConfiguration.hyperparameters(try CaffeFiles.loadSolver(path: solverPath), file: solverPath)
            var schedule = hyper.schedule
            let rows = try String(contentsOf: folder.appendingPathComponent("losses.csv"), encoding: .utf8)
                .split(separator: "\n").dropFirst().map { $0.split(separator: ",") }
            #expect(rows.count == 40)
            for row in rows {
                let iter = Int(row[0])!, expected = Float(String(row[2]))!
                let ours = schedule.rate(at: iter)
                #expect(abs(ours - expected) <= expected.ulp, "\(name) iteration \(iter): \(ours) vs Caffe \(expected)")
            }
        }
    }

    @Test("solver mistakes are one-line diagnostics naming the file")
    func badSolvers() throws {
        func message(_ text: String) -> String {
            do {
                _ = try SolverConfiguration.hyperparameters(try CaffeFiles.parseSolver(text: text, file: "solver.prototxt"), file: "solver.prototxt")
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(message("base_lr: 0.1 lr_policy: \"stpe\"") == "solver.prototxt: unknown lr_policy \"stpe\" — did you mean 'step'?\n  hint: one of: fixed, step, exp, inv, multistep, poly, sigmoid")
        #expect(message("base_lr: 0.1 type: \"AdaGrad\" momentum: 0.9") == "solver.prototxt: AdaGrad does not use momentum; set momentum: 0 (it is 0.9)\n  hint: Caffe rejects this too; remove the momentum line")
        #expect(message("base_lr: 0.1 lr_policy: \"step\"") == "solver.prototxt: lr_policy \"step\" needs stepsize > 0\n  hint: add stepsize: N")
    }
}
