// libFuzzer target for the frame decoder: `make fuzz`.
// Built by swiftc with -sanitize=fuzzer,address together with Sources/FirmwareProtocol/*.swift.
//
// Properties checked on every input, beyond "does not crash":
//  - the streaming decoder never holds more than one maximum frame of pending bytes;
//  - it yields exactly the frames that decoding each delimited block on its own yields;
//  - every frame decoded re-encodes to exactly the bytes it came from (no lenient decoding).
//    No exception: ESTOP's cause, the one field decoded without validation (an e-stop is obeyed
//    whatever its cause byte says), keeps its raw byte, so it re-encodes exactly too.

@_cdecl("LLVMFuzzerTestOneInput")
public func frameDecoderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)

    var streamed: [Frame] = []
    var decoder = FrameDecoder()
    decoder.feed(input) { event in
        if case .frame(let frame) = event { streamed.append(frame) }
    }
    precondition(decoder.pendingByteCount <= Frame.maximumEncodedLength)

    var direct: [Frame] = []
    var start = 0
    for index in 0..<size where input[index] == 0 {
        let block = input[start..<index]
        start = index + 1
        guard !block.isEmpty, let frame = try? Frame.decode(cobsBlock: block) else { continue }
        precondition(frame.encoded() == Array(block) + [0], "a frame re-encodes differently than it was read")
        direct.append(frame)
    }
    precondition(streamed == direct, "streaming and block decoding disagree")
    return 0
}
