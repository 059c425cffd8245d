/// The 32-bit Mersenne Twister (MT19937), the generator behind Caffe's `Caffe::RNG`
/// (`boost::mt19937`), so a transformer given Caffe's seed draws Caffe's crops and mirrors.
///
/// Deterministic for a seed and owned by whoever draws from it; there is no shared instance.
///
///     var generator = MersenneTwister(seed: 5489)
///     generator.next()          // 3499211612, as std::mt19937's first output
///     generator.next(below: 2)  // Caffe's Rand(2): next() % 2
public struct MersenneTwister: Sendable {
    private var state: [UInt32]
    private var index: Int

    public init(seed: UInt32) {
        state = [UInt32](repeating: 0, count: 624)
        state[0] = seed
        for i in 1..<624 {
            state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i)
        }
        index = 624
    }

    /// The next 32-bit output.
    public mutating func next() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `next() % n`, exactly Caffe's `DataTransformer::Rand(n)` (modulo bias included, on purpose).
    public mutating func next(below n: Int) -> Int {
        precondition(n > 0, "next(below:) needs a positive bound")
        return Int(next() % UInt32(n))
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var value = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { value ^= 0x9908_B0DF }
            state[i] = value
        }
        index = 0
    }
}
