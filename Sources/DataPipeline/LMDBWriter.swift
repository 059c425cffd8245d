import CaffeFormat
import CLMDB
import Foundation

/// Writes records into a new or existing LMDB folder, as Caffe's `convert_imageset` does: puts are
/// buffered and committed in transactions of `recordsPerCommit`, and the map grows (doubling) when
/// it fills up, so callers never size it.
///
///     let writer = try LMDBWriter(path: "/tmp/digits_lmdb")
///     try writer.put(key: String(format: "%08d", 0), datum: datum)
///     try writer.finish()
///
/// Used by tests and benchmarks to build databases, and by tools that convert datasets.
/// Not thread-safe: one thread at a time.
public final class LMDBWriter {
    /// The database folder.
    public let path: String
    /// How many puts are grouped into one transaction.
    public var recordsPerCommit = 1000

    private var environment: OpaquePointer?
    private var pending: [(key: Data, value: Data)] = []
    private var mapSize: Int

    /// Creates `path` as a folder if needed and opens it for writing.
    public init(path: String, initialMapSize: Int = 1 << 30) throws {
        self.path = path
        self.mapSize = initialMapSize
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw Diagnostic("cannot create the LMDB folder: \(error.localizedDescription)", file: path)
        }
        var env: OpaquePointer?
        try LMDBReader.check(mdb_env_create(&env), path: path, doing: "creating an LMDB environment")
        environment = env
        try LMDBReader.check(mdb_env_set_mapsize(env, mapSize), path: path, doing: "sizing the map")
        let code = mdb_env_open(env, path, 0, 0o664)
        if code != 0 {
            mdb_env_close(env)
            environment = nil
            throw Diagnostic("cannot open the LMDB for writing (\(LMDBReader.describe(code)))", file: path)
        }
    }

    deinit {
        if let environment { mdb_env_close(environment) }
    }

    /// Queues one record; commits when `recordsPerCommit` are pending.
    public func put(key: Data, value: Data) throws {
        pending.append((key, value))
        if pending.count >= recordsPerCommit { try commit() }
    }

    /// Queues one record under a text key.
    public func put(key: String, value: Data) throws {
        try put(key: Data(key.utf8), value: value)
    }

    /// Queues one serialized `Datum`.
    public func put(key: String, datum: Caffe_Datum) throws {
        let bytes: Data
        do { bytes = try datum.serializedData() } catch {
            throw Diagnostic("cannot serialize the Datum for key \(key): \(error)", file: path)
        }
        try put(key: key, value: bytes)
    }

    /// Commits everything pending and closes the database.
    public func finish() throws {
        try commit()
        if let environment { mdb_env_close(environment) }
        environment = nil
    }

    /// Writes the pending records in one transaction, doubling the map and retrying when full.
    public func commit() throws {
        guard !pending.isEmpty else { return }
        guard let environment else { throw Diagnostic("the LMDB writer was finished", file: path) }
        while true {
            var txn: OpaquePointer?
            try LMDBReader.check(mdb_txn_begin(environment, nil, 0, &txn), path: path, doing: "starting a write transaction")
            var dbi = MDB_dbi()
            var code = mdb_dbi_open(txn, nil, 0, &dbi)
            if code == 0 {
                for record in pending {
                    code = put(record, txn: txn, dbi: dbi)
                    if code != 0 { break }
                }
            }
            if code == 0 { code = mdb_txn_commit(txn) } else { mdb_txn_abort(txn) }
            if code == MDB_MAP_FULL {
                mapSize *= 2
                try LMDBReader.check(mdb_env_set_mapsize(environment, mapSize), path: path, doing: "growing the map")
                continue
            }
            try LMDBReader.check(code, path: path, doing: "writing records")
            pending.removeAll(keepingCapacity: true)
            return
        }
    }

    private func put(_ record: (key: Data, value: Data), txn: OpaquePointer?, dbi: MDB_dbi) -> Int32 {
        record.key.withUnsafeBytes { keyBytes in
            record.value.withUnsafeBytes { valueBytes in
                var key = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
                var value = MDB_val(mv_size: valueBytes.count,
                                    mv_data: UnsafeMutableRawPointer(mutating: valueBytes.baseAddress))
                return mdb_put(txn, dbi, &key, &value, 0)
            }
        }
    }
}
