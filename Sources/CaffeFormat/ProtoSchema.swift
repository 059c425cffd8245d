/// A runtime description of the protobuf messages in our `caffe.proto`.
///
/// swift-protobuf gives us typed messages and a binary codec, but no reflection: it cannot tell
/// which fields a message has, their types, or the names of an enum's values. The prototxt reader
/// needs exactly that to point at `net.prototxt:12:5` and suggest `kernel_size` for `kernal_size`,
/// so `tools/regenerate-protos.sh` derives this table from the same `.proto` file that produces
/// `caffe.pb.swift` (see `Generated/CaffeSchema.swift`). The two can never drift apart.
public struct ProtoSchema: Sendable {
    /// What a field holds on the wire and in text.
    public enum FieldKind: Sendable, Equatable {
        case int32, int64, uint32, uint64, sint32, sint64, fixed32, fixed64, sfixed32, sfixed64
        case float, double, bool, string, bytes
        /// A fully-qualified enum name such as `caffe.PoolingParameter.PoolMethod`.
        case enumeration(String)
        /// A fully-qualified message name such as `caffe.LayerParameter`.
        case message(String)
    }

    /// One field of a message.
    public struct Field: Sendable {
        public let name: String
        public let number: Int
        public let kind: FieldKind
        public let isRepeated: Bool
        public let isPacked: Bool

        public init(_ name: String, _ number: Int, _ kind: FieldKind, repeated: Bool = false, packed: Bool = false) {
            self.name = name
            self.number = number
            self.kind = kind
            self.isRepeated = repeated
            self.isPacked = packed
        }
    }

    /// One message type, fields in declaration order.
    public struct Message: Sendable {
        public let name: String
        public let fields: [Field]
        public init(_ name: String, _ fields: [Field]) {
            self.name = name
            self.fields = fields
        }
        public func field(named name: String) -> Field? { fields.first { $0.name == name } }
    }

    /// One enum type: value names and numbers in declaration order.
    public struct Enumeration: Sendable {
        public let name: String
        public let values: [(name: String, number: Int32)]
        public init(_ name: String, _ values: [(name: String, number: Int32)]) {
            self.name = name
            self.values = values
        }
        public func number(of valueName: String) -> Int32? { values.first { $0.name == valueName }?.number }
    }

    public let messages: [String: Message]
    public let enums: [String: Enumeration]

    public init(messages: [Message], enums: [Enumeration]) {
        self.messages = Dictionary(uniqueKeysWithValues: messages.map { ($0.name, $0) })
        self.enums = Dictionary(uniqueKeysWithValues: enums.map { ($0.name, $0) })
    }
}
