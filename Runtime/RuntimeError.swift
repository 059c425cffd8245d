/// An error raised while preparing or running an `Executable`: a bad input, an allocation failure,
/// an inconsistent program. The message names the blob or step involved and, where there is one,
/// `hint` says what to do.
public struct RuntimeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public var hint: String?

    public init(_ message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }

    public var description: String {
        hint.map { "\(message) (\($0))" } ?? message
    }
}
