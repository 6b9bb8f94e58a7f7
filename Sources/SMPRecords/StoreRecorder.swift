import SMPPlan
import SMPSystem
import SessionRunner

/// The session's record in a `RecordStore`: the records side of `SessionRecorder`.
public struct StoreRecorder: SessionRecorder {
    public let store: RecordStore
    public var planPath: String
    public var planSHA256: String
    public var operatorName: String
    public var machineID: String

    public init(store: RecordStore, planPath: String, planSHA256: String, operatorName: String, machineID: String) {
        self.store = store
        self.planPath = planPath
        self.planSHA256 = planSHA256
        self.operatorName = operatorName
        self.machineID = machineID
    }

    public func open(_ opening: RecordOpening) throws(RecordStoreError) -> OpenedRecord {
        var first = opening.first
        guard let id = opening.resumeSessionID else {
            let plan = opening.plan, hello = opening.hello
            let info = SessionInfo(
                planID: plan.planID, planPath: planPath, planSHA256: planSHA256,
                sessionNumber: plan.session?.number, sessionOf: plan.session?.of,
                clientReference: plan.client?.reference, operatorName: operatorName,
                machineID: machineID, firmwareID: hello.firmwareID.text, bootID: hello.bootID,
                devicePath: opening.devicePath)
            let id = try store.createSession(info, dots: plan.dots)
            // The insert of every planned row left its temporaries' pages in this thread's arena.
            Sys.releaseFreeHeap()
            try store.apply(first, session: id)
            return OpenedRecord(sessionID: id)
        }
        let resolution = try ResumeResolution.resolve(store: store, sessionID: id, hello: opening.hello,
                                                      status: opening.status, decision: opening.ambiguousDecision)
        if let refusal = resolution.refusal { return OpenedRecord(sessionID: id, refusal: refusal) }
        first.statusChanges = resolution.statusChanges
        first.done = []
        first.events += resolution.events
        first.end = RecordBatch.End(state: "running", reason: nil)
        try store.apply(first, session: id)
        return OpenedRecord(sessionID: id, remaining: resolution.remaining, doneIDs: resolution.doneIDs,
                            skippedCount: resolution.skippedCount)
    }

    public func apply(_ batch: RecordBatch, session: Int64) throws(RecordStoreError) {
        try store.apply(batch, session: session)
    }

    public func release(session: Int64) {
        store.releaseOwnership(of: session)
    }
}

extension RecordingOptions {
    /// Recorded in `store`.
    public init(store: RecordStore, planPath: String, planSHA256: String, operatorName: String, machineID: String,
                resumeSessionID: Int64? = nil, ambiguousDecision: AmbiguousDecision? = nil) {
        self.init(recorder: StoreRecorder(store: store, planPath: planPath, planSHA256: planSHA256,
                                          operatorName: operatorName, machineID: machineID),
                  resumeSessionID: resumeSessionID, ambiguousDecision: ambiguousDecision)
    }
}
