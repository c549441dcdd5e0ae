/// Redis Cluster hash slots: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384.
///
/// The hash tag is the part between the first `{` and the first `}` after it, when that part is
/// not empty: `user:{42}:profile` and `user:{42}:sessions` share a slot; `a{}b` hashes whole.
///
/// ```swift
/// RedisHashSlot.slot(of: "da:{3f2a}:d:…") == RedisHashSlot.slot(of: "3f2a")   // true
/// ```
public enum RedisHashSlot {
    /// Number of slots in a Redis Cluster.
    public static let count = 16384

    /// The slot of a key given as any ``RedisArgument`` (its raw bytes are hashed).
    public static func slot(of key: some RedisArgument) -> Int {
        key.withRedisBytes { slot(ofBytes: $0) }
    }

    /// The slot of a key given as raw bytes.
    public static func slot(ofBytes key: UnsafeRawBufferPointer) -> Int {
        var start = 0
        var end = key.count
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            var close = open + 1
            while close < key.count && key[close] != UInt8(ascii: "}") { close += 1 }
            if close < key.count && close > open + 1 {
                start = open + 1
                end = close
            }
        }
        var crc: UInt16 = 0
        for index in start..<end {
            crc = (crc << 8) ^ crcTable[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ key[index])]
        }
        return Int(crc) & (count - 1)
    }

    /// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), one entry per byte value.
    private static let crcTable: [UInt16] = (0..<256).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
