import CaffeFormat
import CLMDB
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One key/value pair read from an LMDB, copied out of the memory map.
public struct LMDBRecord: Sendable, Equatable {
    /// The raw key (Caffe writes `%08d` indices, sometimes followed by `_filename`).
    public var key: Data
    /// The raw value (a serialized `Datum` in Caffe's databases).
    public var value: Data

    public init(key: Data, value: Data) {
        self.key = key
        self.value = value
    }

    /// The key as text when it is printable ASCII (Caffe's keys are), otherwise as hex bytes.
    public var keyDescription: String { LMDBRecord.describe(key: key) }

    static func describe(key: Data) -> String {
        if !key.isEmpty, key.allSatisfy({ $0 >= 32 && $0 < 127 }) { return String(decoding: key, as: UTF8.self) }
        return "0x" + key.map { String(format: "%02x", $0) }.joined()
    }
}

/// A read-only, streaming cursor over a Caffe LMDB, in key order, wrapping around at the end the
/// way Caffe's Data layer restarts an epoch.
///
/// The database is memory-mapped by LMDB and never loaded whole: each `read()` copies one record
/// out of the map. Pages already streamed are dropped from this process's mapping every
/// `releaseInterval` bytes (`madvise(MADV_DONTNEED)`; the kernel's page cache keeps them), so the
/// resident set stays flat however large the database is.
///
/// The environment is opened `MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS` (plus `MDB_NOSUBDIR` when `path`
/// is a file rather than a folder): read-only folders without a `lock.mdb` work, and the reader may be
/// moved between threads. Nothing may write the database while it is being read.
///
///     let reader = try LMDBReader(path: "examples/mnist/mnist_train_lmdb")
///     let first = try reader.read()       // key "00000000"
///     print(reader.count, first.keyDescription)
///
/// Not thread-safe: one thread at a time.
public final class LMDBReader {
    /// The path as given (a folder holding `data.mdb`, or the data file itself).
    public let path: String
    /// The number of records.
    public let count: Int
    /// How many times `read()` has wrapped from the last record back to the first.
    public private(set) var epochsCompleted = 0
    /// Bytes copied out of the map between two releases of mapped pages.
    public var releaseInterval = 64 << 20

    private var environment: OpaquePointer?
    private var transaction: OpaquePointer?
    private var cursor: OpaquePointer?
    private let fileSize: Int
    /// The memory map, found on first read from a record's address (LMDB does not publish it).
    private var mapping: (base: UnsafeMutableRawPointer, length: Int)?
    private var bytesSinceRelease = 0
    private var lastKey: Data?

    /// Opens the database and positions the cursor on its first record.
    ///
    /// Throws a `Diagnostic` naming `path` when there is nothing there ("no such LMDB"), when the
    /// file is not an LMDB or is truncated ("not an LMDB"), or when it holds no records.
    public init(path: String) throws {
        self.path = path
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw Diagnostic("no such LMDB (nothing exists at this path)", file: path,
                             hint: "check data_param.source; relative paths are resolved from the working directory")
        }
        let isFolder = (status.st_mode & S_IFMT) == S_IFDIR
        let dataFile = isFolder ? (path as NSString).appendingPathComponent("data.mdb") : path
        var dataStatus = stat()
        guard stat(dataFile, &dataStatus) == 0 else {
            throw Diagnostic("not an LMDB: the folder has no data.mdb", file: path,
                             hint: "a LevelDB folder holds *.ldb files; convert it to LMDB, or point source at the LMDB folder")
        }
        fileSize = Int(dataStatus.st_size)

        var env: OpaquePointer?
        try LMDBReader.check(mdb_env_create(&env), path: path, doing: "creating an LMDB environment")
        var flags = UInt32(MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS)
        if !isFolder { flags |= UInt32(MDB_NOSUBDIR) }
        let openCode = mdb_env_open(env, path, flags, 0o444)
        if openCode != 0 {
            mdb_env_close(env)
            throw Diagnostic("not an LMDB (\(LMDBReader.describe(openCode)))", file: path,
                             hint: "point data_param.source at a folder written by convert_imageset or another LMDB writer")
        }
        environment = env

        var info = MDB_envinfo()
        var statistics = MDB_stat()
        mdb_env_info(env, &info)
        mdb_env_stat(env, &statistics)
        let pagesNeeded = (Int(info.me_last_pgno) + 1) * Int(statistics.ms_psize)
        if pagesNeeded > fileSize {
            mdb_env_close(env)
            environment = nil
            throw Diagnostic("not an LMDB: data.mdb is truncated (\(fileSize) bytes, its pages need \(pagesNeeded))",
                             file: path, hint: "the copy or download was interrupted; copy the database again")
        }

        var txn: OpaquePointer?
        var dbi = MDB_dbi()
        var cur: OpaquePointer?
        do {
            try LMDBReader.check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), path: path, doing: "starting a read transaction")
            transaction = txn
            try LMDBReader.check(mdb_dbi_open(txn, nil, 0, &dbi), path: path, doing: "opening the main database")
            try LMDBReader.check(mdb_cursor_open(txn, dbi, &cur), path: path, doing: "opening a cursor")
            cursor = cur
            var dbStatistics = MDB_stat()
            try LMDBReader.check(mdb_stat(txn, dbi, &dbStatistics), path: path, doing: "counting records")
            count = Int(dbStatistics.ms_entries)
        } catch {
            if let cur { mdb_cursor_close(cur) }
            if let txn { mdb_txn_abort(txn) }
            mdb_env_close(env)
            environment = nil
            throw error
        }
        if count == 0 {
            close()
            throw Diagnostic("the LMDB holds no records", file: path, hint: "was it written completely?")
        }
        try position(MDB_FIRST)
        var key = MDB_val()
        var value = MDB_val()
        try cursorGet(&key, &value, MDB_GET_CURRENT)
        if let address = value.mv_data ?? key.mv_data { mapping = LMDBReader.mapping(containing: address, limit: fileSize) }
    }

    deinit { close() }

    /// Releases the cursor, transaction and map. Reading afterwards throws.
    public func close() {
        if let cursor { mdb_cursor_close(cursor) }
        if let transaction { mdb_txn_abort(transaction) }
        if let environment { mdb_env_close(environment) }
        cursor = nil
        transaction = nil
        environment = nil
    }

    /// The record under the cursor, without moving.
    public func peek() throws -> LMDBRecord {
        var key = MDB_val()
        var value = MDB_val()
        try cursorGet(&key, &value, MDB_GET_CURRENT)
        return LMDBRecord(key: LMDBReader.copy(key), value: LMDBReader.copy(value))
    }

    /// The record under the cursor; then moves to the next one, wrapping to the first after the last.
    public func read() throws -> LMDBRecord {
        var key = MDB_val()
        var value = MDB_val()
        try cursorGet(&key, &value, MDB_GET_CURRENT)
        let record = LMDBRecord(key: LMDBReader.copy(key), value: LMDBReader.copy(value))
        lastKey = record.key
        bytesSinceRelease += value.mv_size + key.mv_size
        if bytesSinceRelease >= releaseInterval { releaseMappedPages() }
        try advance()
        return record
    }

    /// Moves the cursor `n` records forward, wrapping around (Caffe's `rand_skip` uses this).
    public func skip(_ n: Int) throws {
        for _ in 0..<max(0, n % count) { try advance() }
    }

    /// Moves the cursor back to the first record.
    public func rewind() throws {
        try position(MDB_FIRST)
    }

    /// How many bytes of the memory map `releaseMappedPages()` covers; nil when the map was not found.
    var releasableBytes: Int? { mapping?.length }

    /// Drops this process's mapping of pages already read; they are re-read from the page cache
    /// if needed again. Safe at any time: the reader holds no pointers into the map between calls.
    public func releaseMappedPages() {
        bytesSinceRelease = 0
        #if canImport(Glibc)
        guard let mapping else { return }
        _ = madvise(mapping.base, mapping.length, MADV_DONTNEED)
        #endif
    }

    /// The mapping of this process that holds `address`, from /proc/self/maps, capped at `limit`
    /// bytes (LMDB maps its whole map size, often far more than the file). Nil where /proc is absent.
    static func mapping(containing address: UnsafeMutableRawPointer, limit: Int) -> (base: UnsafeMutableRawPointer, length: Int)? {
        // FileHandle, not String(contentsOfFile:), which stops after the first 4 KB of a /proc file.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { return nil }
        defer { try? handle.close() }
        let maps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        let target = UInt(bitPattern: address)
        for line in maps.split(separator: "\n") {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16),
                  start <= target, target < end, let base = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            return (base, min(Int(end - start), limit))
        }
        return nil
    }

    // MARK: Internals

    private func advance() throws {
        var key = MDB_val()
        var value = MDB_val()
        let code = rawGet(&key, &value, MDB_NEXT)
        if code == MDB_NOTFOUND {
            epochsCompleted += 1
            try position(MDB_FIRST)
        } else if code != 0 {
            throw corruption(code)
        }
    }

    private func position(_ operation: MDB_cursor_op) throws {
        var key = MDB_val()
        var value = MDB_val()
        try cursorGet(&key, &value, operation)
    }

    private func cursorGet(_ key: inout MDB_val, _ value: inout MDB_val, _ operation: MDB_cursor_op) throws {
        guard cursor != nil else {
            throw Diagnostic("the LMDB reader was closed", file: path)
        }
        let code = rawGet(&key, &value, operation)
        if code == MDB_NOTFOUND {
            throw Diagnostic("the LMDB holds no records", file: path, hint: "was it written completely?")
        }
        if code != 0 { throw corruption(code) }
    }

    private func rawGet(_ key: inout MDB_val, _ value: inout MDB_val, _ operation: MDB_cursor_op) -> Int32 {
        mdb_cursor_get(cursor, &key, &value, operation)
    }

    private func corruption(_ code: Int32) -> Diagnostic {
        let place = lastKey.map { "after key \(LMDBRecord.describe(key: $0))" } ?? "at its first record"
        return Diagnostic("the LMDB is corrupt \(place) (\(LMDBReader.describe(code)))", file: path,
                          hint: "copy the database again, or rebuild it from the source images")
    }

    private static func copy(_ value: MDB_val) -> Data {
        guard let base = value.mv_data, value.mv_size > 0 else { return Data() }
        return Data(bytes: base, count: value.mv_size)
    }

    static func describe(_ code: Int32) -> String {
        guard let text = mdb_strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }

    static func check(_ code: Int32, path: String, doing what: String) throws {
        guard code != 0 else { return }
        throw Diagnostic("\(what) failed: \(describe(code))", file: path)
    }
}
