// What a client sends the server (requests, `config.pbtxt`, datatypes, errors) is decoded by the
// ServeProtocol module, which needs neither NIO nor the compiler, so the fuzz harnesses build
// without them; it is part of Serve's public API, as it was before the split.
@_exported import ServeProtocol
