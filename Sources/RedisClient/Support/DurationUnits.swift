/// `Duration` in the units Redis arguments, HTTP headers, logs and reports use: the one home of
/// these conversions for every target of the package (`package` access: not part of the API).
/// Each saturates instead of trapping on a duration too large for its type.
extension Duration {
    /// Whole milliseconds, rounded down (Redis `PX`/`PEXPIRE` and script arguments).
    package var milliseconds: Int {
        let (seconds, attoseconds) = components
        return Int(clamping: Int128(seconds) * 1000 + Int128(attoseconds / 1_000_000_000_000_000))
    }

    /// Whole microseconds, rounded down (latency histograms).
    package var microseconds: Int64 {
        let (seconds, attoseconds) = components
        return Int64(clamping: Int128(seconds) * 1_000_000 + Int128(attoseconds / 1_000_000_000_000))
    }

    /// Whole nanoseconds, rounded down.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return Int64(clamping: Int128(seconds) * 1_000_000_000 + Int128(attoseconds / 1_000_000_000))
    }

    /// The duration in seconds, as a floating-point number (reports, rates).
    package var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// Whole seconds, rounded up, and at least `minimum` (`Retry-After`).
    package func wholeSecondsRoundedUp(atLeast minimum: Int = 0) -> Int {
        let (seconds, attoseconds) = components
        return max(minimum, Int(clamping: Int128(seconds) + (attoseconds > 0 ? 1 : 0)))
    }
}
