/// A request the server refuses or could not serve, as the HTTP status and one sentence for the client.
///
/// Every error the server sends is `{"error": "<message>"}` with `status`; the message names the
/// model, the input and what was expected against what was received, so a client log is enough to
/// fix the call:
///
///     throw ServeError(.badRequest, "model 'squeezenet': input 'data': expected shape [-1,3,227,227], got [1,3,224,224]")
public struct ServeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The HTTP statuses the server answers errors with.
    public enum Status: Int, Sendable {
        case badRequest = 400
        case notFound = 404
        case requestTimeout = 408
        case contentTooLarge = 413
        case internalServerError = 500
        case serviceUnavailable = 503
    }

    public var status: Status
    public var message: String

    public init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.rawValue): \(message)" }

    /// The Prometheus `reason` label of `nv_inference_request_failure` for this error.
    public var failureReason: String {
        switch status {
        case .serviceUnavailable: "REJECTED"
        case .internalServerError: "BACKEND"
        default: "OTHER"
        }
    }
}

/// Writes shapes as the protocol does: `[1,3,227,227]`.
package func shapeText(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }
