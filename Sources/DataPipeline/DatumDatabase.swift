import CaffeFormat
import CLevelDB
import Foundation

/// The two key/value stores Caffe keeps `Datum` records in (`data_param.backend`).
public enum DatabaseBackend: String, Sendable, CaseIterable {
    case lmdb, leveldb

    /// The backend a `Data` layer reads. An explicit `backend:` is honoured; when the field is
    /// unset (its proto default is LEVELDB, which many LMDB nets never spell out), the folder's
    /// contents decide: `data.mdb` is an LMDB, `CURRENT` a LevelDB; otherwise LMDB, whose reader
    /// then names what is missing.
    public static func forDataLayer(_ parameter: Caffe_DataParameter, source: String) -> DatabaseBackend {
        if parameter.hasBackend { return parameter.backend == .leveldb ? .leveldb : .lmdb }
        return detect(source) ?? .lmdb
    }

    /// The backend whose files are at `path`, or nil when neither is recognised.
    public static func detect(_ path: String) -> DatabaseBackend? {
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isFolder) else { return nil }
        if !isFolder.boolValue { return .lmdb }
        if manager.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")) { return .lmdb }
        if manager.fileExists(atPath: (path as NSString).appendingPathComponent("CURRENT")) { return .leveldb }
        return nil
    }

    /// Parses a command-line value (`lmdb`, `leveldb`, any case).
    public init(argument: String) throws {
        guard let backend = DatabaseBackend(rawValue: argument.lowercased()) else {
            throw Diagnostic("unknown database backend '\(argument)'", hint: "use lmdb or leveldb")
        }
        self = backend
    }
}

/// A streaming cursor over the records of a Caffe database in key order that wraps around at
/// the end, as a `Data` layer reads: `LMDBReader` and `LevelDBReader`.
public protocol DatumCursor: AnyObject {
    /// The database path.
    var path: String { get }
    /// How many times reading wrapped from the last record to the first.
    var epochsCompleted: Int { get }
    /// The record under the cursor, without moving.
    func peek() throws -> LMDBRecord
    /// The record under the cursor; then moves on, wrapping to the first after the last.
    func read() throws -> LMDBRecord
    /// Moves `n` records forward, wrapping around.
    func skip(_ n: Int) throws
    /// Releases the database; reading afterwards throws.
    func close()
}

extension LMDBReader: DatumCursor {}

/// Opens a database of either backend for reading.
public func openDatumCursor(path: String, backend: DatabaseBackend) throws -> any DatumCursor {
    switch backend {
    case .lmdb: return try LMDBReader(path: path)
    case .leveldb: return try LevelDBReader(path: path)
    }
}

/// Something records are written into, in order, then finished: `LMDBWriter`, `LevelDBWriter`.
public protocol DatumWriter: AnyObject {
    func put(key: Data, value: Data) throws
    /// Writes everything pending and closes the database.
    func finish() throws
}

extension LMDBWriter: DatumWriter {}

/// Creates a new database of either backend for writing (Caffe's `db::NEW`).
public func makeDatumWriter(path: String, backend: DatabaseBackend) throws -> any DatumWriter {
    switch backend {
    case .lmdb: return try LMDBWriter(path: path)
    case .leveldb: return try LevelDBWriter(path: path)
    }
}

/// A read-only cursor over a Caffe LevelDB (`backend: LEVELDB`), in key order, wrapping around
/// at the end like `LMDBReader`, opened as Caffe's `db::LevelDB::Open(READ)` does.
///
/// LevelDB reads through its own block cache (8 MB by default) without checksum verification on
/// every read, so memory stays flat over databases larger than RAM. The record count is found by
/// one pass over the keys on first use of `count`.
///
///     let reader = try LevelDBReader(path: "examples/mnist/mnist_train_leveldb")
///     let first = try reader.read()
///
/// Not thread-safe: one thread at a time.
public final class LevelDBReader: DatumCursor {
    public let path: String
    public private(set) var epochsCompleted = 0
    private var database: OpaquePointer?
    private var options: OpaquePointer?
    private var readOptions: OpaquePointer?
    private var iterator: OpaquePointer?
    private var lastKey: Data?

    /// Opens the database and positions the cursor on its first record; throws a `Diagnostic`
    /// naming `path` when it is missing, is not a LevelDB, or holds no records.
    public init(path: String) throws {
        self.path = path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw Diagnostic("no such LevelDB (nothing exists at this path)", file: path,
                             hint: "check data_param.source; relative paths are resolved from the working directory")
        }
        guard isFolder.boolValue, FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("CURRENT")) else {
            let isLMDB = DatabaseBackend.detect(path) == .lmdb && (isFolder.boolValue == false
                || FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb")))
            throw Diagnostic("not a LevelDB: the folder has no CURRENT file", file: path,
                             hint: isLMDB ? "this is an LMDB; set backend: LMDB in data_param" : "point source at a LevelDB folder")
        }
        options = leveldb_options_create()
        leveldb_options_set_create_if_missing(options, 0)
        var error: UnsafeMutablePointer<CChar>?
        database = leveldb_open(options, path, &error)
        if let message = LevelDBReader.take(&error) {
            leveldb_options_destroy(options)
            options = nil
            throw Diagnostic("not a LevelDB, or it is damaged (\(message))", file: path,
                             hint: "copy the database again, or rebuild it with swiftjit convert-imageset --backend leveldb")
        }
        readOptions = leveldb_readoptions_create()
        leveldb_readoptions_set_fill_cache(readOptions, 0)
        iterator = leveldb_create_iterator(database, readOptions)
        leveldb_iter_seek_to_first(iterator)
        try checkIterator()
        if leveldb_iter_valid(iterator) == 0 {
            close()
            throw Diagnostic("the LevelDB holds no records", file: path, hint: "was it written completely?")
        }
    }

    deinit { close() }

    /// The number of records (one pass over a second iterator, done once).
    public private(set) lazy var count: Int = {
        guard let database, let readOptions else { return 0 }
        let counter = leveldb_create_iterator(database, readOptions)
        defer { leveldb_iter_destroy(counter) }
        var n = 0
        leveldb_iter_seek_to_first(counter)
        while leveldb_iter_valid(counter) != 0 {
            n += 1
            leveldb_iter_next(counter)
        }
        return n
    }()

    public func close() {
        if let iterator { leveldb_iter_destroy(iterator) }
        if let database { leveldb_close(database) }
        if let readOptions { leveldb_readoptions_destroy(readOptions) }
        if let options { leveldb_options_destroy(options) }
        iterator = nil
        database = nil
        readOptions = nil
        options = nil
    }

    public func peek() throws -> LMDBRecord {
        guard let iterator else { throw Diagnostic("the LevelDB reader was closed", file: path) }
        var keyLength = 0, valueLength = 0
        let key = leveldb_iter_key(iterator, &keyLength)
        let value = leveldb_iter_value(iterator, &valueLength)
        return LMDBRecord(key: key.map { Data(bytes: $0, count: keyLength) } ?? Data(),
                          value: value.map { Data(bytes: $0, count: valueLength) } ?? Data())
    }

    public func read() throws -> LMDBRecord {
        let record = try peek()
        lastKey = record.key
        try advance()
        return record
    }

    public func skip(_ n: Int) throws {
        for _ in 0..<max(0, n % max(1, count)) { try advance() }
    }

    private func advance() throws {
        leveldb_iter_next(iterator)
        try checkIterator()
        if leveldb_iter_valid(iterator) == 0 {
            epochsCompleted += 1
            leveldb_iter_seek_to_first(iterator)
            try checkIterator()
        }
    }

    private func checkIterator() throws {
        var error: UnsafeMutablePointer<CChar>?
        leveldb_iter_get_error(iterator, &error)
        if let message = LevelDBReader.take(&error) {
            let place = lastKey.map { "after key \(LMDBRecord.describe(key: $0))" } ?? "at its first record"
            throw Diagnostic("the LevelDB is corrupt \(place) (\(message))", file: path,
                             hint: "copy the database again, or rebuild it from the source images")
        }
    }

    /// The text of a LevelDB error (freeing it), or nil when there is none.
    static func take(_ error: inout UnsafeMutablePointer<CChar>?) -> String? {
        guard let pointer = error else { return nil }
        let text = String(cString: pointer)
        leveldb_free(pointer)
        error = nil
        return text
    }
}

/// Writes records into a new LevelDB as Caffe's `db::LevelDB::Open(NEW)` does (256 MB write
/// buffer, error if the database exists), in write batches of `recordsPerCommit`.
///
/// Not thread-safe: one thread at a time.
public final class LevelDBWriter: DatumWriter {
    public let path: String
    /// How many puts are grouped into one write batch.
    public var recordsPerCommit = 1000
    private var database: OpaquePointer?
    private var options: OpaquePointer?
    private var writeOptions: OpaquePointer?
    private var batch: OpaquePointer?
    private var pending = 0

    public init(path: String) throws {
        self.path = path
        options = leveldb_options_create()
        leveldb_options_set_create_if_missing(options, 1)
        leveldb_options_set_error_if_exists(options, 1)
        leveldb_options_set_write_buffer_size(options, 256 << 20)
        leveldb_options_set_max_open_files(options, 100)
        var error: UnsafeMutablePointer<CChar>?
        database = leveldb_open(options, path, &error)
        if let message = LevelDBReader.take(&error) {
            leveldb_options_destroy(options)
            options = nil
            throw Diagnostic("cannot create the LevelDB (\(message))", file: path,
                             hint: "the path must not exist yet; remove it or choose another")
        }
        writeOptions = leveldb_writeoptions_create()
        batch = leveldb_writebatch_create()
    }

    deinit { close() }

    public func put(key: Data, value: Data) throws {
        guard let batch else { throw Diagnostic("the LevelDB writer was finished", file: path) }
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                leveldb_writebatch_put(batch, k.baseAddress?.assumingMemoryBound(to: CChar.self), k.count,
                                       v.baseAddress?.assumingMemoryBound(to: CChar.self), v.count)
            }
        }
        pending += 1
        if pending >= recordsPerCommit { try commit() }
    }

    /// Writes the pending batch.
    public func commit() throws {
        guard pending > 0, let batch else { return }
        var error: UnsafeMutablePointer<CChar>?
        leveldb_write(database, writeOptions, batch, &error)
        if let message = LevelDBReader.take(&error) {
            throw Diagnostic("writing records failed (\(message))", file: path)
        }
        leveldb_writebatch_clear(batch)
        pending = 0
    }

    public func finish() throws {
        try commit()
        close()
    }

    private func close() {
        if let batch { leveldb_writebatch_destroy(batch) }
        if let writeOptions { leveldb_writeoptions_destroy(writeOptions) }
        if let database { leveldb_close(database) }
        if let options { leveldb_options_destroy(options) }
        batch = nil
        writeOptions = nil
        database = nil
        options = nil
    }
}
