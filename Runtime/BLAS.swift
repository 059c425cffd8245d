import COpenBLAS

/// The runtime's bridge to OpenBLAS: single-precision GEMM and GEMV on raw buffers.
///
/// OpenBLAS's thread count is process-wide state inside the library; this object sets it once, when
/// it is created. Executables run OpenBLAS on one thread and split large products across their own
/// `ThreadPool` (see `Executable`), because OpenBLAS's idle workers spin in `sched_yield` and take
/// the cores from the pool's kernels that run between GEMMs. Create one per process and pass it
/// down; nothing reads a global.
///
///     let blas = BLAS(threads: 1)
///     blas.sgemm(m: 2, n: 2, k: 2, a: a, lda: 2, b: b, ldb: 2, c: c, ldc: 2)   // C = A·B
public final class BLAS: @unchecked Sendable {
    /// The thread count given to OpenBLAS.
    public let threadCount: Int

    public init(threads: Int) {
        threadCount = max(1, threads)
        openblas_set_num_threads(Int32(threadCount))
    }

    /// `C = alpha · op(A) · op(B) + beta · C`, row-major; `op(X)` is `Xᵀ` when `trans…` is set.
    /// `op(A)` is m×k, `op(B)` is k×n, C is m×n.
    public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                      alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int,
                      beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// `y = alpha · op(A) · x + beta · y`, row-major A with `rows` × `columns` elements; `op(A)` is
    /// `Aᵀ` when `trans` is set. `x` advances by `incX` elements per entry, `y` by one.
    public func sgemv(trans: Bool = false, rows: Int, columns: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                      x: UnsafePointer<Float>, incX: Int = 1, beta: Float = 0, y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, blasint(rows), blasint(columns), alpha, a, blasint(lda),
                    x, blasint(incX), beta, y, 1)
    }
}
