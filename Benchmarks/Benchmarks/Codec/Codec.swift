// Codec micro-benchmarks (package-benchmark): ns per DOT frame, encode and decode, as the
// streaming path uses them (LinkMachine.send(dots:) encodes into the step's output; the link feeds
// whatever read(2) returned to a FrameDecoder). Each measured iteration handles 1,000 frames
// (scalingFactor .kilo), so the per-frame figures are the `*`-scaled rows of the output.
//
// Anchor, measured in the same run: a plain copy of the 28 wire bytes of each frame
// ("anchor: memcpy 28 B"), the floor any encoder or decoder is above. The components (CRC-32C,
// COBS) are benchmarked too, to say where the time of a frame goes.
import Benchmark
import FirmwareProtocol

/// A realistic stream of DOT frames: ids, positions and sequence numbers vary like a session's.
private func dotFrames(_ count: Int) -> [Frame] {
    var frames: [Frame] = []
    for i in 0..<count {
        let x = Int32(-60_000 + (i * 7_919) % 120_000)
        let y = Int32(-50_000 + (i * 104_729) % 100_000)
        let depth = UInt16(600 + (i % 5) * 50)
        let dot = DotCommand(dotID: UInt32(i + 1), epoch: 0, xMicrometres: x, yMicrometres: y,
                             depthMicrometres: depth, dwellMicroseconds: 120_000)
        frames.append(Frame(seq: UInt8(truncatingIfNeeded: i + 1), .dot(dot)))
    }
    return frames
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        timeUnits: .nanoseconds,
        warmupIterations: 50,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 5_000)

    let frames = dotFrames(1_000)
    var wire: [UInt8] = []
    for frame in frames { frame.encode(into: &wire) }
    precondition(wire.count == 28 * frames.count, "a DOT frame is 28 bytes on the wire")
    // COBS blocks (delimiter excluded) and raw frames (type · seq · payload · CRC) of each frame.
    var blocks: [[UInt8]] = []
    var start = 0
    for (index, byte) in wire.enumerated() where byte == 0 {
        blocks.append(Array(wire[start..<index]))
        start = index + 1
    }
    let raws = blocks.map { COBS.decode($0)! }
    let crcInputs = raws.map { Array($0.dropLast(4)) }

    Benchmark("DOT encode: Frame.encode(into:) reused buffer") { benchmark in
        var out: [UInt8] = []
        out.reserveCapacity(28 * frames.count)
        benchmark.startMeasurement()
        for frame in frames { frame.encode(into: &out) }
        benchmark.stopMeasurement()
        blackHole(out)
    }

    Benchmark("DOT encode: Frame.encoded() new array") { benchmark in
        for frame in frames { blackHole(frame.encoded()) }
    }

    Benchmark("DOT decode: FrameDecoder.feed, one 28 kB read") { benchmark in
        var decoder = FrameDecoder()
        var decoded = 0
        benchmark.startMeasurement()
        decoder.feed(wire) { event in
            if case .frame = event { decoded += 1 }
        }
        benchmark.stopMeasurement()
        precondition(decoded == frames.count)
    }

    // As ApplicatorLink.receive: an UnsafeRawBufferPointer per read(2).
    Benchmark("DOT decode: FrameDecoder.feed, one read per frame") { benchmark in
        var decoder = FrameDecoder()
        var decoded = 0
        wire.withUnsafeBytes { all in
            for index in 0..<frames.count {
                decoder.feed(UnsafeRawBufferPointer(rebasing: all[(index * 28)..<(index * 28 + 28)])) { event in
                    if case .frame = event { decoded += 1 }
                }
            }
        }
        precondition(decoded == frames.count)
    }

    Benchmark("DOT decode: Frame.decode(cobsBlock:)") { benchmark in
        for block in blocks { blackHole(try Frame.decode(cobsBlock: block)) }
    }

    Benchmark("part: CRC32C.checksum 22 B") { benchmark in
        for input in crcInputs { blackHole(CRC32C.checksum(input)) }
    }

    Benchmark("part: COBS.encode 26 B") { benchmark in
        var out: [UInt8] = []
        out.reserveCapacity(28 * frames.count)
        benchmark.startMeasurement()
        for raw in raws { COBS.encode(raw, into: &out) }
        benchmark.stopMeasurement()
        blackHole(out)
    }

    Benchmark("part: COBS.decode 27 B") { benchmark in
        for block in blocks { blackHole(COBS.decode(block)) }
    }

    Benchmark("anchor: memcpy 28 B") { benchmark in
        var out = [UInt8](repeating: 0, count: wire.count)
        benchmark.startMeasurement()
        out.withUnsafeMutableBytes { destination in
            wire.withUnsafeBytes { source in
                for index in 0..<frames.count {
                    (destination.baseAddress! + index * 28).copyMemory(from: source.baseAddress! + index * 28, byteCount: 28)
                }
            }
        }
        benchmark.stopMeasurement()
        blackHole(out)
    }
}
