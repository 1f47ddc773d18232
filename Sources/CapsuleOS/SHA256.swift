import CCapsuleSys

/// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the audit chain and `code_sha256`.
///
/// Our own, so the supervisor links no crypto library: a portable loop, and the x86 SHA extensions
/// (CCapsuleSys) where the CPU has them, about ten times faster; every audit line is hashed on the
/// way to a call's answer. Tests hold both to the standard's vectors and to swift-crypto.
public struct SHA256: Sendable {
    /// Whether this CPU has the SHA extensions.
    public static let acceleratable = capsule_sha256_accelerated() != 0

    /// Whether this hasher uses them (`portable: true` keeps the loop, for tests).
    public let accelerated: Bool

    private var state: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19)
    /// Bytes not yet compressed: the first `buffered` of these 64 (inline, so a hasher allocates nothing).
    private var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var buffered = 0
    private var length: UInt64 = 0

    public init(portable: Bool = false) {
        accelerated = !portable && Self.acceleratable
    }

    /// The digest of `bytes`, 32 bytes.
    public static func hash(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        // One call into contiguous storage (an Array's or a slice's), not one per byte: callers in
        // other modules get this generic unspecialized.
        if bytes.withContiguousStorageIfAvailable({ update(buffer: $0) }) == nil {
            Array(bytes).withUnsafeBufferPointer { update(buffer: $0) }
        }
    }

    private mutating func update(buffer input: UnsafeBufferPointer<UInt8>) {
        guard var next = input.baseAddress else { return }
        var left = input.count
        length &+= UInt64(left)
        if buffered > 0 {
            let take = min(64 - buffered, left)
            buffer(take, from: next)
            next += take
            left -= take
            guard buffered == 64 else { return }
            compressBuffer()
        }
        if left >= 64 {
            compress(next, blocks: left / 64)
            next += left / 64 * 64
            left %= 64
        }
        buffer(left, from: next)
    }

    private mutating func buffer(_ count: Int, from bytes: UnsafePointer<UInt8>) {
        let at = buffered
        withUnsafeMutableBytes(of: &buffer) { $0.baseAddress!.advanced(by: at).copyMemory(from: bytes, byteCount: count) }
        buffered += count
    }

    private mutating func compressBuffer() {
        var block = buffer
        withUnsafeBytes(of: &block) { compress($0.baseAddress!.assumingMemoryBound(to: UInt8.self), blocks: 1) }
        buffered = 0
    }

    /// The digest of everything given to `update`.
    public consuming func finalize() -> [UInt8] {
        let bits = length &* 8
        var padding: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0x80, 0, 0, 0, 0, 0, 0, 0, 0)
        // 0x80, zeros to 56 mod 64, then the length in bits, big-endian.
        let count = buffered < 56 ? 56 - buffered : 120 - buffered
        withUnsafeMutableBytes(of: &padding) { raw in
            for index in 0..<8 { raw[count + index] = UInt8(truncatingIfNeeded: bits >> UInt64(56 - 8 * index)) }
            update(buffer: UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: UInt8.self), count: count + 8))
        }
        let words = state
        return [UInt8](unsafeUninitializedCapacity: 32) { digest, initialized in
            withUnsafeBytes(of: words) { raw in
                for index in 0..<8 {
                    let word = raw.load(fromByteOffset: 4 * index, as: UInt32.self)
                    for byte in 0..<4 { digest[4 * index + byte] = UInt8(truncatingIfNeeded: word >> (24 - 8 * UInt32(byte))) }
                }
            }
            initialized = 32
        }
    }

    private static let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    @inline(__always) private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    /// 64-byte blocks into the state.
    private mutating func compress(_ data: UnsafePointer<UInt8>, blocks: Int) {
        if accelerated {
            withUnsafeMutableBytes(of: &state) { words in
                capsule_sha256_blocks(words.baseAddress!.assumingMemoryBound(to: UInt32.self), data, blocks)
            }
        } else {
            for block in 0..<blocks { compressPortably(data + 64 * block) }
        }
    }

    private mutating func compressPortably(_ block: UnsafePointer<UInt8>) {
        state = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            Self.k.withUnsafeBufferPointer { k in
                for i in 0..<16 {
                    w[i] = UInt32(block[4 * i]) << 24 | UInt32(block[4 * i + 1]) << 16 | UInt32(block[4 * i + 2]) << 8 | UInt32(block[4 * i + 3])
                }
                for i in 16..<64 {
                    let s0 = Self.rotr(w[i - 15], 7) ^ Self.rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                    let s1 = Self.rotr(w[i - 2], 17) ^ Self.rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                    w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
                }
                var (a, b, c, d, e, f, g, h) = state
                for i in 0..<64 {
                    let t1 = h &+ (Self.rotr(e, 6) ^ Self.rotr(e, 11) ^ Self.rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[i] &+ w[i]
                    let t2 = (Self.rotr(a, 2) ^ Self.rotr(a, 13) ^ Self.rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                    (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
                }
                return (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d, state.4 &+ e, state.5 &+ f, state.6 &+ g, state.7 &+ h)
            }
        }
    }
}

/// HMAC-SHA256 with a fixed key: the padded key's two blocks are hashed once, so each message
/// costs only its own blocks and one more.
public struct HMACSHA256: Sendable {
    private let inner: SHA256
    private let outer: SHA256

    public init(key: some Sequence<UInt8>, portable: Bool = false) {
        var block = Array(key)
        if block.count > 64 { block = SHA256.hash(block) }
        block += [UInt8](repeating: 0, count: 64 - block.count)
        var inner = SHA256(portable: portable), outer = SHA256(portable: portable)
        inner.update(block.map { $0 ^ 0x36 })
        outer.update(block.map { $0 ^ 0x5c })
        self.inner = inner
        self.outer = outer
    }

    /// The 32-byte code of `message`.
    public func code(_ message: some Sequence<UInt8>) -> [UInt8] {
        var inner = self.inner, outer = self.outer
        inner.update(message)
        outer.update(inner.finalize())
        return outer.finalize()
    }
}
