/// When bytes that the simulator finds already waiting on the pty are taken to have arrived.
///
/// A real applicator has its own CPU: its UART interrupt takes every byte in as it arrives, so a
/// host that sent in time keeps the lease whatever else the machine is doing. The simulator shares
/// the host's CPUs, and a pty gives no arrival time: when its thread is starved it reads bytes
/// late and, dated at the read, they would expire a lease the host kept. Dating every waiting byte
/// at the last look instead would hide a host that really was silent, however late the simulator
/// was. So the credit is bounded and only rescues the lease:
///
/// - only when the lease expiry fell between the simulator's last look and this read, and the
///   read is at most `tolerance` after it, are the waiting bytes dated just before the expiry;
/// - otherwise they are dated at the read, as before.
///
/// The bound this states: a host silent for up to lease + `tolerance` can go unnoticed, and only
/// when its bytes were read after the expiry had passed unjudged — the simulator's thread was late
/// (starved, or its timer and the read fell together); a host silent longer is held at the read.
/// A host that sent nothing is held as before: there are no waiting bytes to credit.
struct LateReadCredit: Sendable, Equatable {
    /// How late past the lease expiry a read may be and still count its bytes as in time (µs).
    var toleranceMicroseconds: UInt64

    /// The tolerance for a lease of `leaseMicroseconds`: half of it, so a silent host is held
    /// within 1.5 leases even when the simulator was starved.
    static func forLease(_ leaseMicroseconds: UInt64) -> LateReadCredit {
        LateReadCredit(toleranceMicroseconds: leaseMicroseconds / 2)
    }

    /// The wall time (µs) to hand the firmware with bytes read at `readAt` that were not there at
    /// `lastLookedAt` (the firmware's own time: the last time it was run).
    func arrivalTime(readAt: UInt64, lastLookedAt: UInt64, leaseExpiry: UInt64?) -> UInt64 {
        guard let leaseExpiry, lastLookedAt < leaseExpiry, leaseExpiry <= readAt,
              readAt - leaseExpiry <= toleranceMicroseconds
        else { return readAt }
        return leaseExpiry - 1
    }
}
