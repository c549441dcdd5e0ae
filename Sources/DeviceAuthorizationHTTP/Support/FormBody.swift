import DeviceAuthorization
import Foundation
import Hummingbird

/// An `application/x-www-form-urlencoded` body, parsed strictly as OAuth 2.0 asks
/// (RFC 6749 §3.1): every parameter at most once, and an empty value counts as absent.
struct FormBody: Sendable {
    /// Why a body was refused. Each case becomes `invalid_request` (or an HTML 400 page).
    enum Failure: Error, Equatable {
        case wrongContentType
        case tooLarge(limit: Int)
        case malformed
        case repeated(String)
        case tooManyParameters(limit: Int)

        var description: String {
            switch self {
            case .tooManyParameters(let limit): "too many parameters (at most \(limit))"
            case .wrongContentType: "the request body must be application/x-www-form-urlencoded"
            case .tooLarge(let limit): "the request body is larger than \(limit) bytes"
            case .malformed: "the request body is not valid form encoding"
            case .repeated(let name): "parameter '\(Self.printable(name))' must not be repeated"
            }
        }

        /// A parameter name as it may appear in an error message: short and plain.
        static func printable(_ name: String) -> String {
            String(name.prefix(40).filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
        }
    }

    private var values: [String: String]

    /// The value of a parameter, `nil` when absent or empty.
    subscript(_ name: String) -> String? { values[name] }

    /// Whether the body carries a parameter (with a non-empty value).
    func has(_ name: String) -> Bool { values[name] != nil }

    /// The number of parameters with a non-empty value.
    var parameterCount: Int { values.count }

    init(values: [String: String]) { self.values = values }

    /// The default cap on parameters in one body (``DeviceAuthorizationHTTPConfiguration/maxFormParameters``).
    /// No endpoint reads more than six; the cap bounds the work and the memory one body can cost.
    static let defaultMaxParameters = 64

    /// Reads and parses the request body, refusing other content types, oversized bodies and
    /// bodies with more than `maxParameters` parameters.
    static func read(from request: Request, limit: Int, maxParameters: Int = defaultMaxParameters) async throws(Failure) -> FormBody {
        let length = request.headers.value(of: .contentLength).flatMap { Int($0) }
        guard let contentType = request.headers.value(of: .contentType) else {
            // A bodiless POST (for example only HTTP Basic client authentication) is an empty form.
            if length == 0 || (length == nil && request.headers.value(of: .transferEncoding) == nil) { return FormBody(values: [:]) }
            throw .wrongContentType
        }
        guard isFormContentType(contentType) else { throw .wrongContentType }
        if let length, length > limit {
            throw .tooLarge(limit: limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch {
            throw .tooLarge(limit: limit)
        }
        // Form encoding is ASCII with %XX escapes; raw bytes that are not even UTF-8 are refused
        // rather than silently repaired into U+FFFD (which could make two bodies look equal).
        // The body is split on its bytes (`&` and `=` are ASCII, so each piece is UTF-8 exactly
        // when the whole is) and each name and value is validated as it is decoded.
        return try buffer.withUnsafeReadableBytes { raw in parse(raw.assumingMemoryBound(to: UInt8.self), maxParameters: maxParameters) }.get()
    }

    /// Whether a `Content-Type` value names form encoding (parameters such as charset allowed).
    static func isFormContentType(_ value: String) -> Bool {
        if value == "application/x-www-form-urlencoded" { return true }
        let mediaType = value.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        return mediaType == "application/x-www-form-urlencoded"
    }

    /// Parses form encoding: `+` is a space, `%XX` escapes must be valid UTF-8.
    static func parse(_ text: String, maxParameters: Int = .max) throws(Failure) -> FormBody {
        try Array(text.utf8).withUnsafeBufferPointer { parse($0, maxParameters: maxParameters) }.get()
    }

    /// Parses form-encoded bytes: pairs split on `&`, name and value on the first `=`.
    ///
    /// Linear in the body whatever its shape: every byte is visited a bounded number of times and
    /// each parameter costs one hash lookup (names with empty values were once kept in an array
    /// searched per parameter, so 16 KiB of `1=&2=&…` took ~150× the time of one 16 KiB value).
    /// Empty pieces (`&&`) are skipped and not counted; more than `maxParameters` non-empty pieces
    /// fail with ``Failure/tooManyParameters(limit:)`` before the next one is decoded.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, maxParameters: Int = .max) -> Result<FormBody, Failure> {
        var values: [String: String] = [:]
        var emptyNames: Set<String> = []
        var count = 0
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: "&") { end += 1 }
            defer { start = end + 1 }
            guard end > start else { continue }
            count += 1
            guard count <= maxParameters else { return .failure(.tooManyParameters(limit: maxParameters)) }
            var equals = start
            while equals < end && bytes[equals] != UInt8(ascii: "=") { equals += 1 }
            guard let name = decode(UnsafeBufferPointer(rebasing: bytes[start..<equals])), !name.isEmpty else { return .failure(.malformed) }
            let value = equals < end ? decode(UnsafeBufferPointer(rebasing: bytes[(equals + 1)..<end])) : ""
            guard let value else { return .failure(.malformed) }
            guard values[name] == nil && !emptyNames.contains(name) else { return .failure(.repeated(name)) }
            if value.isEmpty { emptyNames.insert(name) } else { values[name] = value }
        }
        return .success(FormBody(values: values))
    }

    /// `+` → space and `%XX` → byte, then the bytes must be UTF-8; `nil` for a bad escape or bad
    /// UTF-8 (what Foundation's `removingPercentEncoding` answers, without bridging through NSString
    /// on every request).
    private static func decode(_ component: UnsafeBufferPointer<UInt8>) -> String? {
        // Most values (client ids, device codes, grant types with %3A aside) have no escapes.
        if !component.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) {
            return String(validating: component, as: UTF8.self)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(component.count)
        var iterator = component.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexDigitValue), let low = iterator.next().flatMap(hexDigitValue) else { return nil }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// The form parser for `deviceauth-bench form`, which compares hostile body shapes with a benign
/// one in the same run. Not API: it may change with the parser.
@_spi(Benchmarks)
public enum FormParserBenchmark {
    /// Parses `bytes` as a form body; the number of parameters with values, or `nil` when refused.
    public static func parse(_ bytes: [UInt8], maxParameters: Int) -> Int? {
        let result = bytes.withUnsafeBufferPointer { FormBody.parse($0, maxParameters: maxParameters) }
        guard case .success(let form) = result else { return nil }
        return form.parameterCount
    }
}
