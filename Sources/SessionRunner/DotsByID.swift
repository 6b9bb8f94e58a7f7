import SMPPlan

/// The plan's dots by id, without a dictionary of `PlanDot`s: a 200,000-dot plan made that
/// dictionary ~14 MB (and a 10 MB temporary array to build it) for a few look-ups per dot. Here
/// the ids are sorted beside their positions in the plan (8 bytes a dot) and found by binary
/// search; the dots themselves stay in the plan's own array (shared, not copied).
struct DotsByID: Sendable {
    private let dots: [PlanDot]
    /// Ascending; equal ids (only in a plan that failed validation) in file order.
    private let ids: [UInt32]
    /// `dots` index of `ids[i]`.
    private let positions: [Int32]

    init(_ dots: [PlanDot]) {
        self.dots = dots
        var order = Array(dots.indices)
        // Plans usually list ids in increasing order already: then there is nothing to sort.
        let ascending = zip(dots, dots.dropFirst()).allSatisfy { $0.id < $1.id }
        if !ascending {
            order.sort { dots[$0].id != dots[$1].id ? dots[$0].id < dots[$1].id : $0 < $1 }
        }
        ids = order.map { dots[$0].id }
        positions = order.map { Int32(truncatingIfNeeded: $0) }
    }

    /// The first dot in file order with this id (what `Dictionary(uniquingKeysWith: first)` kept).
    subscript(id: UInt32) -> PlanDot? {
        var low = 0, high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        guard low < ids.count, ids[low] == id else { return nil }
        return dots[Int(positions[low])]
    }
}
