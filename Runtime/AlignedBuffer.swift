#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size block of float32 values aligned to 64 bytes (one cache line, one AVX-512 vector).
///
/// The buffer owns its memory and frees it when the last reference goes away. Its contents start
/// zeroed. JIT'd kernels and BLAS read and write it through `pointer`; the buffer never moves, so a
/// pointer taken once stays valid for the buffer's lifetime. It is not synchronized: whoever owns it
/// (an `Executable`, a `Tensor`) decides who writes when.
///
///     let buffer = try AlignedBuffer(count: 1024)
///     buffer.pointer[0] = 1
public final class AlignedBuffer: @unchecked Sendable {
    /// The alignment of `pointer`, in bytes.
    public static let alignment = 64
    /// How many floats one alignment unit holds; offsets that are multiples of it stay aligned.
    public static let alignmentInFloats = alignment / MemoryLayout<Float>.stride

    /// The number of floats.
    public let count: Int
    /// The first float; valid (and non-null) even when `count` is 0.
    public let pointer: UnsafeMutablePointer<Float>

    /// Allocates `count` zeroed floats, 64-byte aligned.
    public convenience init(count: Int) throws {
        try self.init(count: count, zeroed: true)
    }

    /// Allocates `count` floats, 64-byte aligned; with `zeroed: false` their contents are
    /// undefined until written (for a caller that writes every element at once, which then
    /// touches the memory once instead of twice).
    ///
    /// A zeroed buffer of `mappedBytes` or more is mapped straight from the kernel (anonymous pages
    /// read as zero until written), not allocated and then cleared: clearing a training arena of
    /// gigabytes wrote every page once before any kernel ran, most of a warm compile's time. The
    /// pages are faulted in by whatever touches them first, the first run, as with `calloc`.
    public init(count: Int, zeroed: Bool) throws {
        guard count >= 0 else { throw RuntimeError("cannot allocate a buffer of \(count) floats") }
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        var raw: UnsafeMutableRawPointer?
        if zeroed, bytes >= AlignedBuffer.mappedBytes {
            let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let mapped, mapped != MAP_FAILED else {
                throw RuntimeError("out of memory mapping \(bytes) bytes", hint: "use a smaller batch or input size")
            }
            raw = mapped
            self.mappedBytes = bytes
        } else {
            guard posix_memalign(&raw, AlignedBuffer.alignment, bytes) == 0, raw != nil else {
                throw RuntimeError("out of memory allocating \(bytes) bytes", hint: "use a smaller batch or input size")
            }
            if zeroed { memset(raw!, 0, bytes) }
            self.mappedBytes = 0
        }
        self.count = count
        self.pointer = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// Zeroed buffers at least this large are mapped pages (page-aligned, so 64-byte aligned).
    static let mappedBytes = 1 << 20
    /// The length of the mapping when the buffer is mapped pages, else 0 (`posix_memalign`).
    private let mappedBytes: Int

    /// Allocates a buffer holding a copy of `values`.
    public convenience init(copying values: [Float]) throws {
        try self.init(count: values.count)
        values.withUnsafeBufferPointer { source in
            if let base = source.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit {
        if mappedBytes > 0 { munmap(pointer, mappedBytes) } else { free(pointer) }
    }

    /// The contents as an array (a copy).
    public var values: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    /// Rounds an element count up to a multiple of the alignment, so the next block stays aligned.
    public static func alignedCount(_ count: Int) -> Int {
        (count + alignmentInFloats - 1) / alignmentInFloats * alignmentInFloats
    }
}

/// A dense float32 tensor in C order over an `AlignedBuffer`: the runtime's unit of data exchange.
///
/// Invariant: `buffer.count == shape.reduce(1, *)` (1 for a 0-d tensor). Copies share the buffer
/// (it is a reference); use `init(shape:values:)` to get a fresh one.
///
///     let x = try Tensor(shape: [1, 3], values: [1, 2, 3])
public struct Tensor: @unchecked Sendable {
    /// Extents, outermost first; `[]` for a scalar.
    public var shape: [Int]
    /// The elements, C order.
    public let buffer: AlignedBuffer

    /// A zero-filled tensor.
    public init(shape: [Int]) throws {
        guard let count = Tensor.elementCount(shape) else { throw RuntimeError("invalid tensor shape \(shape)") }
        self.shape = shape
        self.buffer = try AlignedBuffer(count: count)
    }

    /// A tensor holding a copy of `values`; their count must match `shape`.
    public init(shape: [Int], values: [Float]) throws {
        guard let count = Tensor.elementCount(shape), count == values.count else {
            throw RuntimeError("shape \(shape) needs \(Tensor.elementCount(shape).map(String.init) ?? "a valid number of") values, got \(values.count)")
        }
        self.shape = shape
        self.buffer = try AlignedBuffer(copying: values)
    }

    /// The number of elements.
    public var count: Int { buffer.count }

    /// The elements as an array (a copy).
    public var values: [Float] { buffer.values }

    /// The product of `shape` (1 for `[]`), or nil when an extent is negative or it overflows.
    public static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}

/// The C heap, as far as a long-lived process needs to manage it.
public enum Heap {
    /// Returns freed heap pages to the operating system (glibc's `malloc_trim`), so that memory a
    /// compilation used only while it ran stops counting in the process's resident size. A no-op
    /// where the C library has no such call.
    public static func trim() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)`, which Swift's Glibc module does not import (<malloc.h>).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
