import Foundation
import Testing
@testable import NumPy

@Suite("NumPy format: round trips, header parsing, errors")
struct FormatTests {
    static let shapes: [[Int]] = [[], [0], [1], [5], [2, 3], [2, 0, 3], [2, 3, 4, 5], [1, 1, 1, 1, 1, 1, 1], [123_456]]

    @Test("npy round trip in memory and on disk for many shapes, including 0-d and empty", arguments: shapes)
    func npyRoundTrip(shape: [Int]) throws {
        let a = ramp(shape, scale: 0.25, offset: -7)
        let bytes = try NumPyFile.encode(a)
        // NumPy layout: v1.0 magic, header padded with spaces to a multiple of 64 bytes, ending in '\n'.
        #expect(Array(bytes.prefix(8)) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        #expect((10 + headerLength) % 64 == 0)
        #expect(bytes[10 + headerLength - 1] == 0x0A)
        #expect(bytes.count == 10 + headerLength + 4 * a.count)
        #expect(try NumPyFile.readArray(from: bytes) == a)

        try Fixtures.withTempDir { dir in
            let path = dir.appendingPathComponent("a.npy").path
            try NumPyFile.write(a, to: path)
            let back = try NumPyFile.readArray(path: path)
            #expect(back == a)
            #expect(back.shape == shape)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
        }
    }

    @Test("npy header text matches np.save exactly")
    func headerText() throws {
        func header(_ a: NDArray) throws -> String {
            let bytes = try NumPyFile.encode(a)
            let n = Int(bytes[8]) | Int(bytes[9]) << 8
            return String(decoding: bytes[10 ..< 10 + n], as: UTF8.self)
        }
        // np.save pads with 21 - len(str(shape[0])) spaces of growth room, then aligns to 64.
        let h1 = try header(ramp([2, 3, 7, 9]))
        #expect(h1.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 7, 9), }" + String(repeating: " ", count: 20)))
        #expect(h1.count == 118)
        #expect(try header(NDArray(scalar: 1)).hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (), }    "))
        #expect(try header(ramp([5])).hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"))
    }

    @Test("npz round trip keeps key order, '/' keys, 0-d and empty arrays")
    func npzRoundTrip() throws {
        let entries: [(String, NDArray)] = [
            ("inception_3a/1x1", ramp([2, 4, 3, 3])),
            ("conv1/0", ramp([4, 3, 3, 3], scale: -1, offset: 2)),
            ("conv1/1", ramp([4])),
            ("loss", NDArray(scalar: 2.576759)),
            ("empty", NDArray(shape: [0, 5])),
            ("data", ramp([2, 3, 7, 9], scale: 1e-3, offset: 0)),
            ("ünïcödé/κλειδί", NDArray([1, 2, 3])),
        ]
        let bytes = try NumPyFile.encode(archive: entries)
        let archive = try NumPyFile.readArchive(from: bytes)
        #expect(archive.keys == entries.map(\.0))
        #expect(archive.count == entries.count)
        for (key, array) in entries {
            #expect(archive[key] == array, "member \(key)")
        }
        #expect(archive["loss"]?.shape == [])
        #expect(archive["missing"] == nil)
        #expect(archive.entries.map(\.key) == entries.map(\.0))
        #expect(Array(archive).map(\.key) == entries.map(\.0))
        #expect(try NPZArchive(entries) == archive)
        #expect(try NumPyFile.encode(archive) == bytes)

        try Fixtures.withTempDir { dir in
            let path = dir.appendingPathComponent("out.npz").path
            try NumPyFile.write(archive: entries, to: path)
            #expect(try NumPyFile.readArchive(path: path) == archive)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
            try NumPyFile.write(archive, to: path)
            #expect(try NumPyFile.readArchive(path: path) == archive)
        }

        // Zip details the golden files share: DOS date 1980-01-01 00:00, STORED, no extra fields.
        #expect(Array(bytes.prefix(4)) == [0x50, 0x4B, 3, 4])
        #expect(Array(bytes[8 ..< 14]) == [0, 0, 0, 0, 0x21, 0])
        #expect(Array(bytes[28 ..< 30]) == [0, 0])
    }

    @Test("NPZArchive subscript assignment appends, replaces in place and removes")
    func archiveEditing() throws {
        var a = NPZArchive()
        #expect(a.isEmpty)
        a["b"] = NDArray([1])
        a["a"] = NDArray([2])
        a["b"] = NDArray([3])
        #expect(a.keys == ["b", "a"])
        #expect(a["b"] == NDArray([3]))
        a["b"] = nil
        #expect(a.keys == ["a"])
        #expect(throws: NumPyError.self) { try NPZArchive([("k", NDArray([1])), ("k", NDArray([2]))]) }
    }

    @Test("DEFLATE members and directory entries are read")
    func deflateMembers() throws {
        let a = ramp([3, 5, 7]), b = NDArray(scalar: -1.5)
        let zip = try makeZip([("x/y.npy", Array(try NumPyFile.encode(a))), ("loss.npy", Array(try NumPyFile.encode(b)))], deflate: true)
        let archive = try NumPyFile.readArchive(from: Data(zip))
        #expect(archive.keys == ["x/y", "loss"])
        #expect(archive["x/y"] == a)
        #expect(archive["loss"] == b)

        let withDir = try makeZip([("x/", []), ("x/y.npy", Array(try NumPyFile.encode(a)))])
        #expect(try NumPyFile.readArchive(from: Data(withDir)).keys == ["x/y"])
    }

    @Test("atomic writes replace the target and leave no temporary files")
    func atomicWrite() throws {
        try Fixtures.withTempDir { dir in
            let path = dir.appendingPathComponent("w.npy").path
            try NumPyFile.write(ramp([100]), to: path)
            try NumPyFile.write(NDArray(scalar: 1), to: path)
            #expect(try NumPyFile.readArray(path: path) == NDArray(scalar: 1))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.npy"])

            let missing = dir.appendingPathComponent("no/such/folder/w.npy").path
            let e = try #require(throws: NumPyError.self) { try NumPyFile.write(NDArray(scalar: 1), to: missing) }
            #expect(e.kind == .io)
            #expect(e.description.hasPrefix(missing + ": "))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.npy"])
        }
    }

    // MARK: Header parsing

    static let headerTexts: [String] = [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + String(repeating: " ", count: 10) + "\n",
        "{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,3)}",
        "{ 'shape' : ( 2 , 3 , ) , 'fortran_order' : False , 'descr' : '<f4' , }\n",
        "{'descr': '|f4', 'fortran_order': False, 'shape': (2L, 3L), }",
        "{'descr':\t'<f4',\n 'fortran_order': False,\r\n 'shape': [2, 3],}   \n",
        "{u'descr': u'<f4', u'fortran_order': False, u'shape': (2, 3)}\n",
        "{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), 'extra': None, }\n",
    ]

    @Test("header parsing tolerates spacing, quotes, trailing commas, key order, Python 2 longs", arguments: headerTexts)
    func headerVariants(header: String) throws {
        let values: [Float] = [0, 1, 2, 3, 4, 5]
        let a = try NumPyFile.readArray(from: Data(makeNPY(header: header, payload: le32(values))))
        #expect(a == NDArray(shape: [2, 3], data: values))
    }

    @Test("versions 2.0 and 3.0, big-endian and Fortran order by hand")
    func versionsByteOrderFortran() throws {
        let values: [Float] = [1.5, -2, 3.25, 1e-20, .infinity, -0.0]
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }\n"
        for version: (UInt8, UInt8) in [(2, 0), (3, 0)] {
            let a = try NumPyFile.readArray(from: Data(makeNPY(header: header, payload: le32(values), version: version)))
            #expect(sameBits(a.data, values))
        }
        let big = try NumPyFile.readArray(from: Data(makeNPY(
            header: "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }\n", payload: be32(values))))
        #expect(sameBits(big.data, values))

        // Fortran order: element (i, j) of a 2x3 array is stored at i + 2*j.
        let f = try NumPyFile.readArray(from: Data(makeNPY(
            header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n", payload: le32([0, 3, 1, 4, 2, 5]))))
        #expect(f == NDArray(shape: [2, 3], data: [0, 1, 2, 3, 4, 5]))
        // 3-d Fortran: (2, 3, 4) stored column-major.
        var fdata = [Float](repeating: 0, count: 24)
        for i in 0 ..< 2 { for j in 0 ..< 3 { for k in 0 ..< 4 { fdata[i + 2 * j + 6 * k] = Float(i * 12 + j * 4 + k) } } }
        let f3 = try NumPyFile.readArray(from: Data(makeNPY(
            header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }\n", payload: le32(fdata))))
        #expect(f3 == NDArray(shape: [2, 3, 4], data: (0 ..< 24).map(Float.init)))
    }

    @Test("half, integer and bool dtypes convert to Float")
    func otherDTypes() throws {
        func read(_ descr: String, _ payload: [UInt8], _ n: Int) throws -> [Float] {
            try NumPyFile.readArray(from: Data(makeNPY(
                header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(n),), }\n", payload: payload))).data
        }
        #expect(try read("<f2", [0x00, 0x38, 0x00, 0xBD, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x7C], 5)
                == [0.5, -1.25, 65504, 0x1p-24, .infinity])
        #expect(try read("|i1", [0xFF, 0x80, 0x7F], 3) == [-1, -128, 127])
        #expect(try read("<u2", [0xFF, 0xFF, 0x01, 0x00], 2) == [65535, 1])
        #expect(try read(">i2", [0xFF, 0xFE, 0x01, 0x00], 2) == [-2, 256])
        #expect(try read("<i8", [0, 0, 0, 0, 0, 1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 2) == [0x1p40, -1])
        #expect(try read("|b1", [1, 0, 1], 3) == [1, 0, 1])
        #expect(try read("?", [0, 1], 2) == [0, 1])
    }

    // MARK: Errors

    @Test("errors name the file, the member and what was expected")
    func errorMessages() throws {
        let complex = makeNPY(header: "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n", payload: [UInt8](repeating: 0, count: 8))
        let zip = try makeZip([("conv1/1.npy", Array(try NumPyFile.encode(NDArray([1])))), ("conv1/0.npy", complex)])
        let e = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(from: Data(zip), name: "x.npz") }
        #expect(e.kind == .unsupported)
        #expect(e.file == "x.npz")
        #expect(e.member == "conv1/0.npy")
        #expect(e.description.hasPrefix("x.npz: member 'conv1/0.npy': unsupported dtype '<c8' — expected a real numeric dtype"))

        func npyError(_ bytes: [UInt8]) throws -> NumPyError {
            try #require(throws: NumPyError.self) { try NumPyFile.readArray(from: Data(bytes), name: "a.npy") }
        }
        let structured = try npyError(makeNPY(header: "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }", payload: []))
        #expect(structured.kind == .unsupported && structured.description.contains("structured dtype"))
        let object = try npyError(makeNPY(header: "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", payload: []))
        #expect(object.description == "a.npy: unsupported dtype '|O' — expected a real numeric dtype (f2/f4/f8, i1/i2/i4/i8, u1/u2/u4/u8 or b1)")
        let short = try npyError(makeNPY(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", payload: le32([1, 2])))
        #expect(short.kind == .truncated && short.description.contains("24 bytes") && short.description.contains("only 8 bytes follow"))
        let v4 = try npyError(makeNPY(header: "{}", payload: [], version: (4, 0)))
        #expect(v4.description == "a.npy: unsupported .npy format version 4.0 — expected 1.0, 2.0 or 3.0")
        let magic = try npyError(Array("PK\u{3}\u{4}hello world".utf8))
        #expect(magic.kind == .corrupt && magic.description.contains("expected the magic bytes"))
        let noShape = try npyError(makeNPY(header: "{'descr': '<f4', 'fortran_order': False}", payload: []))
        #expect(noShape.description.contains("no 'shape' key"))
        let badHeader = try npyError(makeNPY(header: "{'descr': '<f4', 'fortran_order': Flase, 'shape': (1,)}", payload: le32([1])))
        #expect(badHeader.description.contains("unknown name 'Flase'"))
        let negative = try npyError(makeNPY(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", payload: []))
        #expect(negative.description.contains("non-negative"))
        let deep = try npyError(makeNPY(header: String(repeating: "(", count: 60_000), payload: []))
        #expect(deep.description.contains("nesting deeper"))

        let notNPZ = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(from: NumPyFile.encode(NDArray([1])), name: "y.npz") }
        #expect(notNPZ.description == "y.npz: this is a .npy file, not a .npz archive — expected a zip archive written by np.savez")
        let other = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(from: Data(try makeZip([("README.txt", [1, 2])])), name: "y.npz") }
        #expect(other.description.hasPrefix("y.npz: member 'README.txt': not an array — expected only '<key>.npy' members"))

        let missing = "/nonexistent-\(UUID().uuidString)/x.npy"
        let io = try #require(throws: NumPyError.self) { try NumPyFile.readArray(path: missing) }
        #expect(io.kind == .io && io.description == "\(missing): cannot open for reading: No such file or directory")
        let dir = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(path: "/tmp") }
        #expect(dir.description == "/tmp: is a directory — expected a .npy or .npz file")
    }

    @Test("CRC-32 mismatches and impossible sizes are reported as corruption")
    func corruption() throws {
        var zip = try makeZip([("k.npy", Array(try NumPyFile.encode(ramp([10]))))])
        zip[30 + 5 + 128 + 4] ^= 0x01  // a data byte of member k.npy
        let e = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(from: Data(zip), name: "c.npz") }
        #expect(e.kind == .corrupt)
        #expect(e.description.hasPrefix("c.npz: member 'k.npy': CRC-32 mismatch"))
    }

    @Test("writers reject inconsistent arrays and duplicate keys")
    func writerValidation() throws {
        var bad = NDArray(shape: [2, 2], repeating: 0)
        bad.data.removeLast()
        let e1 = try #require(throws: NumPyError.self) { try NumPyFile.encode(bad) }
        #expect(e1.kind == .invalidArgument && e1.description.contains("shape [2, 2] with 3 elements"))
        let e2 = try #require(throws: NumPyError.self) {
            try NumPyFile.encode(archive: [("a/b", NDArray([1])), ("a/b", NDArray([2]))])
        }
        #expect(e2.description == "<memory>: member 'a/b.npy': duplicate key 'a/b' — expected each key once")
        let e3 = try #require(throws: NumPyError.self) { try NumPyFile.encode(archive: [("w", bad)]) }
        #expect(e3.member == "w.npy")
    }
}
