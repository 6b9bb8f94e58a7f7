// The simulator wraps the firmware core: `Firmware`, `FirmwareConfiguration`, `FaultPlan` and the
// ground-truth types are part of DeviceSim's API, so `import DeviceSim` brings them along.
@_exported import FirmwareCore
