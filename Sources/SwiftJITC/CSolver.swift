import Foundation
import SwiftJIT

/// What `sj_solver` holds: a `LayerwiseSolver`, its nets as `sj_net` handles (owned by the solver:
/// callers never free them), and the snapshot paths last handed to C.
final class CSolver {
    let solver: LayerwiseSolver
    let net: CNet
    let testNets: [CNet]
    let strings = CStrings()

    init(_ solver: LayerwiseSolver) {
        self.solver = solver
        net = CNet(solver.net)
        testNets = solver.testNets.map(CNet.init)
    }
}

/// An unretained handle: the solver owns the object.
private func borrowedHandle(_ object: CNet) -> OpaquePointer {
    OpaquePointer(Unmanaged.passUnretained(object).toOpaque())
}

@_cdecl("sj_solver_create")
public func sj_solver_create(_ path: UnsafePointer<CChar>?, _ options: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> OpaquePointer? {
    CStatus.catching {
        guard let out else { throw CAPIError(.invalidArgument, "out is NULL") }
        out.pointee = nil
        let solverPath = try cString(path, "solver_path")
        guard FileManager.default.fileExists(atPath: solverPath) else { throw CAPIError(.notFound, "\(solverPath): no such file") }
        let settings = Handle.peek(options, as: COptions.self) ?? COptions()
        var training = TrainingOptions()
        // Caffe logs to stderr (glog); stdout stays the caller's.
        training.progress = .lines
        training.write = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        let solver = try LayerwiseSolver(solverPath: solverPath, options: training, threads: settings.threads,
                                         cache: settings.makeKernelCache()) { net in settings.hostLayer(indexOffset: net << 16) }
        out.pointee = Handle.retain(CSolver(solver))
    }
}

@_cdecl("sj_solver_free")
public func sj_solver_free(_ solver: OpaquePointer?) {
    Handle.release(solver, as: CSolver.self)
}

@_cdecl("sj_solver_net")
public func sj_solver_net(_ solver: OpaquePointer?) -> OpaquePointer? {
    Handle.peek(solver, as: CSolver.self).map { borrowedHandle($0.net) }
}

@_cdecl("sj_solver_test_net_count")
public func sj_solver_test_net_count(_ solver: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(solver, as: CSolver.self)?.testNets.count ?? 0)
}

@_cdecl("sj_solver_test_net")
public func sj_solver_test_net(_ solver: OpaquePointer?, _ index: Int32) -> OpaquePointer? {
    guard let box = Handle.peek(solver, as: CSolver.self), box.testNets.indices.contains(Int(index)) else { return nil }
    return borrowedHandle(box.testNets[Int(index)])
}

@_cdecl("sj_solver_step")
public func sj_solver_step(_ solver: OpaquePointer?, _ iterations: Int32, _ loss: UnsafeMutablePointer<Float>?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(solver, as: CSolver.self, "solver")
        guard iterations >= 0 else { throw CAPIError(.invalidArgument, "iterations is \(iterations); give 0 or more") }
        let smoothed = try box.solver.step(Int(iterations))
        loss?.pointee = smoothed
    }
}

@_cdecl("sj_solver_solve")
public func sj_solver_solve(_ solver: OpaquePointer?) -> OpaquePointer? {
    CStatus.catching { try Handle.borrow(solver, as: CSolver.self, "solver").solver.solve() }
}

@_cdecl("sj_solver_apply_update")
public func sj_solver_apply_update(_ solver: OpaquePointer?) -> OpaquePointer? {
    CStatus.catching { try Handle.borrow(solver, as: CSolver.self, "solver").solver.applyUpdate() }
}

@_cdecl("sj_solver_iteration")
public func sj_solver_iteration(_ solver: OpaquePointer?) -> Int32 {
    Int32(Handle.peek(solver, as: CSolver.self)?.solver.iteration ?? 0)
}

@_cdecl("sj_solver_snapshot")
public func sj_solver_snapshot(_ solver: OpaquePointer?, _ modelPath: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                               _ statePath: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(solver, as: CSolver.self, "solver")
        let paths = try box.solver.snapshot()
        modelPath?.pointee = box.strings.pointer(paths.model)
        statePath?.pointee = box.strings.pointer(paths.state)
    }
}

@_cdecl("sj_solver_restore")
public func sj_solver_restore(_ solver: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> OpaquePointer? {
    CStatus.catching {
        let box = try Handle.borrow(solver, as: CSolver.self, "solver")
        let state = try cString(path, "state_path")
        guard FileManager.default.fileExists(atPath: state) else { throw CAPIError(.notFound, "\(state): no such file") }
        try box.solver.restore(from: state)
    }
}
