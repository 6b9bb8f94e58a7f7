import Dispatch

/// The interlock lines of a machine: inputs watched through edge events, outputs driven on
/// demand. Two implementations share one event path (`GPIOInputPipeline`): `LibgpiodBackend`
/// (real chips, through the C shim) and `SimulatedGPIOBackend` (a pipe instead of a chip).
///
/// Confinement: everything runs on `queue`, a serial queue the owner gives when opening the
/// backend and uses for itself (the interlock runtime): an edge is handled, and the needle-power
/// output driven, without a thread hop.
public protocol InterlockLineBackend: AnyObject, Sendable {
    /// The serial queue of the backend and of its owner.
    var queue: DispatchQueue { get }
    /// The watched input lines; `GPIOInputChange.inputIndex` is a position in this array.
    var inputs: [GPIOInputLine] { get }
    /// The driven output lines; `setOutput(_:to:)` takes a position in this array.
    var outputs: [GPIOOutputLine] { get }

    /// Starts watching the inputs. Call on `queue`, once. `onChange` is called on `queue`: first
    /// once per input with the level read at start (`isInitial`), then for every debounced change
    /// and, when a line can no longer be read, with `.lost`.
    func start(onChange: @escaping (GPIOInputChange) -> Void)

    /// Drives output `index` to `level`, synchronously (one ioctl). Call on `queue`.
    func setOutput(_ index: Int, to level: GPIOLevel) throws(GPIOError)

    /// Drives every output to its safe level, stops watching and releases the lines; the
    /// descriptors are closed in their sources' cancel handlers, after which `onClosed` (if any)
    /// is called on `queue`. Call on `queue`. Idempotent. Returns the outputs that could NOT be
    /// driven to their safe level (empty when all were); later calls return the same list.
    @discardableResult
    func close(onClosed: (@Sendable () -> Void)?) -> [GPIOSafeLevelFailure]
}

extension InterlockLineBackend {
    /// `close(onClosed: nil)`.
    @discardableResult
    public func close() -> [GPIOSafeLevelFailure] { close(onClosed: nil) }

    /// Position of the input named `name`.
    public func inputIndex(named name: String) -> Int? { inputs.firstIndex { $0.name == name } }

    /// Position of the output named `name`.
    public func outputIndex(named name: String) -> Int? { outputs.firstIndex { $0.name == name } }
}
