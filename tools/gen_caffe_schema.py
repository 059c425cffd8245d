#!/usr/bin/env python3
"""Generate Sources/CaffeFormat/Generated/CaffeSchema.swift from caffe.proto.

The prototxt reader needs to know, at run time, every message's fields (name,
number, type, label, packing) and every enum's value names. swift-protobuf does
not expose that, so this script derives a `ProtoSchema.caffe` table from the
very same .proto file that produces caffe.pb.swift.

How: `protoc --descriptor_set_out=... --include_imports` compiles the .proto to a
serialized google.protobuf.FileDescriptorSet, which is decoded here by a small
protobuf wire-format reader, so the pip `protobuf` package is not needed.

Usage (from any directory):
    python3 tools/gen_caffe_schema.py [--protoc PATH] [--proto FILE] [--out FILE]

Normally run by tools/regenerate-protos.sh. Only python3 and protoc are needed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_REL = "Sources/CaffeFormat/Proto/caffe.proto"
OUT_REL = "Sources/CaffeFormat/Generated/CaffeSchema.swift"

# --------------------------------------------------------------------------
# Minimal protobuf wire-format reader
# --------------------------------------------------------------------------

WT_VARINT, WT_I64, WT_LEN, WT_SGROUP, WT_EGROUP, WT_I32 = 0, 1, 2, 3, 4, 5


def _varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def iter_fields(buf):
    """Yield (field_number, wire_type, value) for one serialized message.

    value is an int for VARINT/I32/I64 and a bytes object for LEN fields.
    Groups (deprecated, unused by descriptor.proto) are rejected.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == WT_VARINT:
            value, pos = _varint(buf, pos)
        elif wire == WT_I64:
            value = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wire == WT_I32:
            value = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        elif wire == WT_LEN:
            length, pos = _varint(buf, pos)
            value = bytes(buf[pos:pos + length])
            if len(value) != length:
                raise ValueError("truncated length-delimited field")
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value
    if pos != end:
        raise ValueError("message overran its buffer")


def _int32(v):
    """Reinterpret a decoded varint as a signed 32-bit value (enum numbers)."""
    v &= 0xFFFFFFFFFFFFFFFF
    if v >= 1 << 63:
        v -= 1 << 64
    return v


# --------------------------------------------------------------------------
# Descriptor decoding (only the parts we need)
# --------------------------------------------------------------------------

TYPE_NAMES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32",
    6: "fixed64", 7: "fixed32", 8: "bool", 9: "string", 11: "message",
    12: "bytes", 13: "uint32", 14: "enum", 15: "sfixed32", 16: "sfixed64",
    17: "sint32", 18: "sint64",
}
LABEL_REPEATED = 3


def decode_field(buf):
    f = {"name": None, "number": None, "label": 1, "type": None,
         "type_name": None, "packed": False}
    for num, wire, val in iter_fields(buf):
        if num == 1 and wire == WT_LEN:
            f["name"] = val.decode("utf-8")
        elif num == 3 and wire == WT_VARINT:
            f["number"] = _int32(val)
        elif num == 4 and wire == WT_VARINT:
            f["label"] = val
        elif num == 5 and wire == WT_VARINT:
            f["type"] = val
        elif num == 6 and wire == WT_LEN:
            f["type_name"] = val.decode("utf-8")
        elif num == 8 and wire == WT_LEN:  # FieldOptions
            for onum, owire, oval in iter_fields(val):
                if onum == 2 and owire == WT_VARINT:
                    f["packed"] = bool(oval)
    return f


def decode_enum(buf, prefix, out_enums):
    name = None
    values = []
    for num, wire, val in iter_fields(buf):
        if num == 1 and wire == WT_LEN:
            name = val.decode("utf-8")
        elif num == 2 and wire == WT_LEN:
            vname, vnum = None, 0
            for n2, w2, v2 in iter_fields(val):
                if n2 == 1 and w2 == WT_LEN:
                    vname = v2.decode("utf-8")
                elif n2 == 2 and w2 == WT_VARINT:
                    vnum = _int32(v2)
            values.append((vname, vnum))
    out_enums.append((prefix + name, values))


def decode_message(buf, prefix, out_messages, out_enums):
    name = None
    fields = []
    nested = []
    enums = []
    for num, wire, val in iter_fields(buf):
        if num == 1 and wire == WT_LEN:
            name = val.decode("utf-8")
        elif num == 2 and wire == WT_LEN:
            fields.append(decode_field(val))
        elif num == 3 and wire == WT_LEN:
            nested.append(val)
        elif num == 4 and wire == WT_LEN:
            enums.append(val)
    full = prefix + name
    out_messages.append((full, fields))
    for e in enums:
        decode_enum(e, full + ".", out_enums)
    for m in nested:
        decode_message(m, full + ".", out_messages, out_enums)


def decode_descriptor_set(data):
    messages, enums = [], []
    for num, wire, file_buf in iter_fields(data):
        if num != 1 or wire != WT_LEN:
            continue
        package = ""
        msg_bufs, enum_bufs = [], []
        for fnum, fwire, fval in iter_fields(file_buf):
            if fnum == 2 and fwire == WT_LEN:
                package = fval.decode("utf-8")
            elif fnum == 4 and fwire == WT_LEN:
                msg_bufs.append(fval)
            elif fnum == 5 and fwire == WT_LEN:
                enum_bufs.append(fval)
        prefix = package + "." if package else ""
        for e in enum_bufs:
            decode_enum(e, prefix, enums)
        for m in msg_bufs:
            decode_message(m, prefix, messages, enums)
    return messages, enums


# --------------------------------------------------------------------------
# Swift emission
# --------------------------------------------------------------------------

def swift_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def swift_kind(field):
    t = field["type"]
    if t not in TYPE_NAMES:
        raise ValueError(f"field {field['name']}: unsupported descriptor type {t}")
    kind = TYPE_NAMES[t]
    if kind in ("message", "enum"):
        tn = field["type_name"] or ""
        tn = tn[1:] if tn.startswith(".") else tn
        case = "message" if kind == "message" else "enumeration"
        return f".{case}({swift_string(tn)})"
    return "." + kind


def swift_field(field):
    parts = [swift_string(field["name"]), str(field["number"]), swift_kind(field)]
    if field["label"] == LABEL_REPEATED:
        parts.append("repeated: true")
        if field["packed"]:
            parts.append("packed: true")
    return ".init(" + ", ".join(parts) + ")"


def render(messages, enums, proto_rel):
    out = []
    out.append(f"// Generated by tools/gen_caffe_schema.py from {proto_rel}. Do not edit.")
    out.append("")
    out.append("extension ProtoSchema {")
    out.append("    /// Every message and enum of `caffe.proto`, for position-aware prototxt reading.")
    out.append("    public static let caffe = ProtoSchema(")
    out.append("        messages: [")
    for name, fields in messages:
        if not fields:
            out.append(f"            .init({swift_string(name)}, []),")
            continue
        out.append(f"            .init({swift_string(name)}, [")
        for f in fields:
            out.append(f"                {swift_field(f)},")
        out.append("            ]),")
    out.append("        ],")
    out.append("        enums: [")
    for name, values in enums:
        vals = ", ".join(f"({swift_string(v)}, {n})" for v, n in values)
        out.append(f"            .init({swift_string(name)}, [{vals}]),")
    out.append("        ]")
    out.append("    )")
    out.append("}")
    return "\n".join(out) + "\n"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protoc", default=os.environ.get("PROTOC", "protoc"),
                    help="protoc executable (default: $PROTOC or protoc on PATH)")
    ap.add_argument("--proto", default=os.path.join(REPO_ROOT, PROTO_REL),
                    help="the .proto file to describe")
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, OUT_REL),
                    help="the Swift file to write")
    args = ap.parse_args(argv)

    protoc = shutil.which(args.protoc) or args.protoc
    proto = os.path.abspath(args.proto)
    proto_dir = os.path.dirname(proto)

    with tempfile.TemporaryDirectory(prefix="caffe-schema-") as tmp:
        desc_path = os.path.join(tmp, "caffe.desc")
        subprocess.run(
            [protoc, f"--proto_path={proto_dir}", f"--descriptor_set_out={desc_path}",
             "--include_imports", os.path.basename(proto)],
            check=True,
        )
        with open(desc_path, "rb") as fh:
            data = fh.read()

    messages, enums = decode_descriptor_set(data)
    if not messages:
        sys.exit("gen_caffe_schema: descriptor set contained no messages")

    try:
        proto_rel = os.path.relpath(proto, REPO_ROOT)
    except ValueError:
        proto_rel = proto
    if proto_rel.startswith(".."):
        proto_rel = proto
    text = render(messages, enums, proto_rel)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"gen_caffe_schema: wrote {len(messages)} messages, {len(enums)} enums to {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
