import Foundation
import Testing
@testable import NumPy

/// Files produced by the real NumPy (via `python3 -c`), and files we write read back by NumPy.
/// These tests fail — they do not skip — when python3 or numpy is missing.
@Suite("NumPy interop with real numpy")
struct NumPyInteropTests {
    /// Writes every fixture into argv[1] and `refs.json`: for each array, its shape and the hex of
    /// `astype('<f4').tobytes()` in C order (what our reader must produce, bit for bit), plus the
    /// key order of each archive.
    static let generator = #"""
import os, io, json, zipfile
d = sys.argv[1]
refs, orders = {}, {}
def p(name): return os.path.join(d, name)
def ref(key, a):
    a = np.asarray(a)
    refs[key] = {"shape": list(a.shape), "hex": np.ascontiguousarray(a.astype('<f4')).tobytes().hex()}
def save(name, a):
    np.save(p(name), a)
    ref(name, a)
def savez(name, entries, compressed=False, writer=None):
    (writer or (np.savez_compressed if compressed else np.savez))(p(name), **entries)
    for k, a in entries.items(): ref(name + "::" + k, a)
    orders[name] = list(entries)

base = np.arange(24).reshape(2, 3, 4) * 0.5 - 3
save("f4.npy", base.astype('<f4'))
save("f8.npy", np.array([[0.1, 1/3, -2.5], [1e10, -0.0, 3.0]]))
save("i8.npy", np.array([-5, 0, 7, 2**40, -2**53], dtype='<i8'))
save("i4.npy", np.array([[-2**31, 2**31 - 1], [0, -1]], dtype='<i4'))
save("i2.npy", np.array([-32768, 32767, 5], dtype='<i2'))
save("i1.npy", np.array([-128, 127, 0], dtype='i1'))
save("u2.npy", np.array([0, 65535], dtype='<u2'))
save("u4.npy", np.array([0, 2**32 - 1], dtype='<u4'))
save("u8.npy", np.array([0, 2**63], dtype='<u8'))
save("u1.npy", np.arange(256, dtype='u1').reshape(16, 16))
save("b1.npy", np.array([True, False, True, True]))
save("f2.npy", np.array([0.5, -1.25, 65504, 6e-8, np.inf, -np.inf, np.nan, 0.0, -0.0], dtype='<f2'))
fo = np.asfortranarray(base.astype('<f4'))
assert fo.flags.f_contiguous and not fo.flags.c_contiguous
save("fortran_f4.npy", fo)
save("fortran_f8.npy", np.asfortranarray(np.arange(12.0).reshape(3, 4) / 7))
save("fortran_i2_4d.npy", np.asfortranarray(np.arange(24, dtype='<i2').reshape(2, 1, 3, 4)))
save("be_f4.npy", base.astype('>f4'))
save("be_f8.npy", (base / 3).astype('>f8'))
save("be_i4.npy", np.array([-7, 1 << 20], dtype='>i4'))
save("scalar_f4.npy", np.float32(3.5))
save("scalar_f8.npy", np.array(2.25))
save("empty.npy", np.zeros((0, 3), dtype='f4'))
for v in [(2, 0), (3, 0)]:
    name = "v%d.npy" % v[0]
    with open(p(name), "wb") as f:
        np.lib.format.write_array(f, base.astype('<f4'), version=v)
    ref(name, base)

members = {
    "conv1/0": (np.arange(108).reshape(4, 3, 3, 3) / 10).astype('f4'),
    "conv1/1": np.array([1.5, -2, 0, 7], dtype='f4'),
    "inception_3a/1x1": np.arange(2 * 3 * 5 * 5, dtype='f8').reshape(2, 3, 5, 5) - 50,
    "loss": np.float32(2.5),
    "labels": np.array([3, 1, 4, 1, 5], dtype='i8'),
    "mask": np.array([1, 0, 255], dtype='u1'),
}
savez("savez.npz", members)
savez("savez_compressed.npz", members, compressed=True)
assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zipfile.ZipFile(p("savez_compressed.npz")).infolist())

# Data descriptors (flag bit 3): zipfile writes them when the output is not seekable.
class Unseekable(io.RawIOBase):
    def __init__(self, f): self.f = f
    def writable(self): return True
    def write(self, b): return self.f.write(b)
    def seekable(self): return False
    def flush(self): self.f.flush()
with open(p("descriptor.npz"), "wb") as raw:
    with zipfile.ZipFile(Unseekable(raw), "w") as z:
        for k, a in members.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(a))
orders["descriptor.npz"] = list(members)
for k, a in members.items(): ref("descriptor.npz::" + k, a)
infos = zipfile.ZipFile(p("descriptor.npz")).infolist()
assert all(i.flag_bits & 8 for i in infos), [i.flag_bits for i in infos]

# Mixed STORED/DEFLATE members with data descriptors.
with open(p("descriptor_deflate.npz"), "wb") as raw:
    with zipfile.ZipFile(Unseekable(raw), "w") as z:
        for i, (k, a) in enumerate(members.items()):
            kind = zipfile.ZIP_DEFLATED if i % 2 == 0 else zipfile.ZIP_STORED
            info = zipfile.ZipInfo(k + ".npy")
            info.compress_type = kind
            with z.open(info, "w") as f:
                np.lib.format.write_array(f, np.asanyarray(a))
orders["descriptor_deflate.npz"] = list(members)
for k, a in members.items(): ref("descriptor_deflate.npz::" + k, a)
infos = zipfile.ZipFile(p("descriptor_deflate.npz")).infolist()
assert all(i.flag_bits & 8 for i in infos) and infos[0].compress_type == zipfile.ZIP_DEFLATED

# Full zip64: zip64 extra fields for sizes and offsets and a zip64 end record, forced by
# lowering zipfile's limits (np.savez already forces zip64 local headers).
old = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
try:
    savez("zip64.npz", members)
    savez("zip64_compressed.npz", members, compressed=True)
finally:
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = old
for name in ["zip64.npz", "zip64_compressed.npz"]:
    data = open(p(name), "rb").read()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data, name

# Unsupported content, for error messages.
np.save(p("complex.npy"), np.array([1 + 2j], dtype='c8'))
np.savez(p("complex.npz"), **{"conv1/1": np.ones(2, 'f4'), "conv1/0": np.array([1 + 2j], dtype='c8')})
np.save(p("structured.npy"), np.zeros(2, dtype=[('a', '<f4'), ('b', '<i4')]))
np.save(p("object.npy"), np.array([None, 1], dtype=object), allow_pickle=True)

with open(p("refs.json"), "w") as f:
    json.dump({"arrays": refs, "orders": orders}, f)
print("generated", len(refs), "arrays")
"""#

    struct Ref: Decodable {
        var shape: [Int]
        var hex: String
        var floats: [Float] {
            var bytes: [UInt8] = []
            var it = hex.makeIterator()
            while let hi = it.next(), let lo = it.next() { bytes.append(UInt8(String([hi, lo]), radix: 16)!) }
            return stride(from: 0, to: bytes.count, by: 4).map { i in
                Float(bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
            }
        }
    }

    struct Refs: Decodable {
        var arrays: [String: Ref]
        var orders: [String: [String]]
    }

    @Test("reads np.save / np.savez / np.savez_compressed output: all dtypes, Fortran, big-endian, v2/v3, zip64, data descriptors")
    func readsNumPyFiles() throws {
        try Fixtures.withTempDir { dir in
            _ = try Fixtures.python(Self.generator, [dir.path])
            let refs = try JSONDecoder().decode(Refs.self, from: Data(contentsOf: dir.appendingPathComponent("refs.json")))
            #expect(refs.arrays.count == 59, "numpy reference arrays generated")

            var archives: [String: NPZArchive] = [:]
            for (key, ref) in refs.arrays.sorted(by: { $0.key < $1.key }) {
                let parts = key.components(separatedBy: "::")
                let path = dir.appendingPathComponent(parts[0]).path
                let array: NDArray
                if parts.count == 2 {
                    if archives[parts[0]] == nil { archives[parts[0]] = try NumPyFile.readArchive(path: path) }
                    array = try #require(archives[parts[0]]?[parts[1]], "\(parts[0]) has no key '\(parts[1])'")
                } else {
                    array = try NumPyFile.readArray(path: path)
                }
                #expect(array.shape == ref.shape, "\(key)")
                #expect(sameBits(array.data, ref.floats), "\(key): \(array) differs from numpy's astype(float32)")
            }
            for (name, order) in refs.orders {
                #expect(archives[name]?.keys == order, "key order of \(name)")
            }

            // Spot checks of exact values, independent of the reference dump.
            let f4 = try NumPyFile.readArray(path: dir.appendingPathComponent("f4.npy").path)
            #expect(f4 == NDArray(shape: [2, 3, 4], data: (0 ..< 24).map { Float($0) * 0.5 - 3 }))
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("fortran_f4.npy").path) == f4)
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("be_f4.npy").path) == f4)
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("v3.npy").path) == f4)
            let f8 = try NumPyFile.readArray(path: dir.appendingPathComponent("f8.npy").path)
            #expect(f8 == NDArray(shape: [2, 3], data: [Float(0.1 as Double), Float((1.0 / 3.0) as Double), -2.5, 1e10, -0.0, 3]))
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("i8.npy").path).data == [-5, 0, 7, 0x1p40, -0x1p53])
            let u1 = try NumPyFile.readArray(path: dir.appendingPathComponent("u1.npy").path)
            #expect(u1.shape == [16, 16] && u1.data == (0 ..< 256).map(Float.init))
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("b1.npy").path).data == [1, 0, 1, 1])
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("scalar_f4.npy").path) == NDArray(scalar: 3.5))
            #expect(try NumPyFile.readArray(path: dir.appendingPathComponent("empty.npy").path).shape == [0, 3])

            for name in ["savez.npz", "savez_compressed.npz", "descriptor.npz", "descriptor_deflate.npz", "zip64.npz", "zip64_compressed.npz"] {
                let z = try #require(archives[name])
                #expect(z.keys == ["conv1/0", "conv1/1", "inception_3a/1x1", "loss", "labels", "mask"], "\(name)")
                #expect(z["loss"] == NDArray(scalar: 2.5), "\(name)")
                #expect(z["conv1/1"] == NDArray([1.5, -2, 0, 7]), "\(name)")
                #expect(z["conv1/0"]?.shape == [4, 3, 3, 3], "\(name)")
                #expect(z["mask"]?.data == [1, 0, 255], "\(name)")
            }

            // Unsupported content fails with a message naming file, member and expectation.
            let complexPath = dir.appendingPathComponent("complex.npz").path
            let e = try #require(throws: NumPyError.self) { try NumPyFile.readArchive(path: complexPath) }
            #expect(e.description.hasPrefix("\(complexPath): member 'conv1/0.npy': unsupported dtype '<c8' — expected a real numeric dtype"))
            for name in ["complex.npy", "structured.npy", "object.npy"] {
                let path = dir.appendingPathComponent(name).path
                let e = try #require(throws: NumPyError.self) { try NumPyFile.readArray(path: path) }
                #expect(e.kind == .unsupported, "\(name): \(e)")
                #expect(e.description.hasPrefix(path + ": unsupported"), "\(e)")
            }
        }
    }

    @Test("numpy reads what we write, and np.save produces identical .npy bytes")
    func numpyReadsOurFiles() throws {
        try Fixtures.withTempDir { dir in
            let base = NDArray(shape: [2, 3, 4], data: (0 ..< 24).map { Float($0) * 0.5 - 3 })
            try NumPyFile.write(base, to: dir.appendingPathComponent("ours.npy").path)
            try NumPyFile.write(NDArray(scalar: 2.5), to: dir.appendingPathComponent("scalar.npy").path)
            try NumPyFile.write(NDArray(shape: [0, 7]), to: dir.appendingPathComponent("empty.npy").path)
            try NumPyFile.write(archive: [
                ("inception_3a/1x1", base),
                ("conv1/0", NDArray([1, 2, 3])),
                ("loss", NDArray(scalar: 2.5)),
                ("ü/κ", NDArray(shape: [1, 1], data: [9])),
            ], to: dir.appendingPathComponent("ours.npz").path)
            let out = try Fixtures.python(#"""
import os, io, zipfile
d = sys.argv[1]
def p(n): return os.path.join(d, n)
base = (np.arange(24).reshape(2, 3, 4) * 0.5 - 3).astype('<f4')
def same_as_np_save(name, a):
    buf = io.BytesIO()
    np.save(buf, a)
    mine = open(p(name), "rb").read()
    assert buf.getvalue() == mine, (name, buf.getvalue()[:128], mine[:128])
a = np.load(p("ours.npy"))
assert a.dtype == np.dtype('<f4') and a.shape == (2, 3, 4) and np.array_equal(a, base)
same_as_np_save("ours.npy", base)
s = np.load(p("scalar.npy"))
assert s.shape == () and s == np.float32(2.5)
same_as_np_save("scalar.npy", np.array(2.5, dtype='<f4'))
same_as_np_save("empty.npy", np.zeros((0, 7), dtype='<f4'))
z = np.load(p("ours.npz"))
assert z.files == ["inception_3a/1x1", "conv1/0", "loss", "ü/κ"], z.files
assert np.array_equal(z["inception_3a/1x1"], base)
assert np.array_equal(z["conv1/0"], np.array([1, 2, 3], 'f4'))
assert z["loss"].shape == () and z["loss"] == 2.5
assert z["ü/κ"].shape == (1, 1)
zf = zipfile.ZipFile(p("ours.npz"))
assert zf.testzip() is None
for info in zf.infolist():
    assert info.date_time == (1980, 1, 1, 0, 0, 0), info
    assert info.compress_type == zipfile.ZIP_STORED and info.extra == b"", info
print("numpy-ok")
"""#, [dir.path])
            #expect(out.contains("numpy-ok"), "\(out)")
        }
    }
}
