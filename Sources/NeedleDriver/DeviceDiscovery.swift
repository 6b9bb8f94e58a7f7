// Finding applicators through libudev.
//
// Every tty with a USB parent is returned, applicator or not, so that "nothing found" can say what
// WAS found. The udev properties (ID_VENDOR_ID, ID_MODEL_ID, ID_SERIAL_SHORT, DEVLINKS, …) come
// from udev's database, written by systemd-udevd's rules; where the database is missing (no udevd:
// a container, an initramfs) the USB device's own sysfs attributes are used instead, and
// `udevInitialized` says so.
//
// Only the subsystem is matched in libudev: several `udev_enumerate_add_match_property` calls are
// ORed, not ANDed (systemd's device-enumerator.c), so vendor, product and serial are checked here.

import CUdev
import SMPSystem
import SystemPackage

/// Which USB serial devices are smp applicators.
///
/// The udev rule `udev/70-smp-applicator.rules` matches the same vendor and product: change both
/// together.
public struct ApplicatorMatch: Sendable, Hashable {
    /// USB vendor id, four lowercase hex digits as udev writes them (`ID_VENDOR_ID`).
    public var vendorID: String
    /// USB product id, four lowercase hex digits (`ID_MODEL_ID`).
    public var productID: String
    /// When set, only the applicator with this USB serial number (`ID_SERIAL_SHORT`) matches.
    public var serial: String?

    /// Ids are normalised to lowercase; a leading `0x` is dropped.
    public init(vendorID: String, productID: String, serial: String? = nil) {
        self.vendorID = Self.normalisedHex(vendorID)
        self.productID = Self.normalisedHex(productID)
        self.serial = serial
    }

    /// pid.codes' open-source vendor id 0x1209 with product 0x5350 ("SP" in ASCII).
    ///
    /// 0x5350 is this project's choice and is not yet allocated by pid.codes: it must be
    /// registered there (or changed, here and in the udev rule) before devices ship.
    public static let `default` = ApplicatorMatch(vendorID: "1209", productID: "5350")

    /// Whether `port`'s vendor, product (and serial, when this match names one) are this match's.
    public func matches(vendorID: String?, productID: String?, serial: String?) -> Bool {
        guard let vendorID, let productID else { return false }
        guard Self.normalisedHex(vendorID) == self.vendorID, Self.normalisedHex(productID) == self.productID else {
            return false
        }
        if let wanted = self.serial { return serial == wanted }
        return true
    }

    static func normalisedHex(_ text: String) -> String {
        var text = text.lowercased()
        if text.hasPrefix("0x") { text.removeFirst(2) }
        return text
    }
}

/// A serial (tty) device with a USB parent, as udev sees it.
public struct DiscoveredPort: Sendable, Hashable, Codable {
    /// The device node, e.g. `/dev/ttyACM0` (`DEVNAME`).
    public var devicePath: String
    /// USB vendor id, lowercase hex (`ID_VENDOR_ID`, else the USB device's `idVendor`).
    public var vendorID: String?
    /// USB product id, lowercase hex (`ID_MODEL_ID`, else `idProduct`).
    public var productID: String?
    /// USB serial number (`ID_SERIAL_SHORT`, else the USB device's `serial`).
    public var serial: String?
    /// Manufacturer string (`ID_VENDOR_ENC`/`ID_VENDOR`, else `ID_VENDOR_FROM_DATABASE`, else sysfs).
    public var manufacturer: String?
    /// Product string (`ID_MODEL_ENC`/`ID_MODEL`, else `ID_MODEL_FROM_DATABASE`, else sysfs).
    public var product: String?
    /// The stable `/dev/serial/by-id/…` link made by udev's stock rules, if any.
    public var byIDPath: String?
    /// Our `/dev/smp/applicator-<serial>` link made by `70-smp-applicator.rules`, if any.
    public var applicatorLink: String?
    /// Vendor and product (and serial, if asked for) match the `ApplicatorMatch` of the scan.
    public var isApplicator: Bool
    /// False when udev has not processed the device (no systemd-udevd running, or it has not
    /// finished): then there are no links, no group or mode from our rule, and the ids come from
    /// sysfs.
    public var udevInitialized: Bool

    public init(devicePath: String, vendorID: String? = nil, productID: String? = nil, serial: String? = nil,
                manufacturer: String? = nil, product: String? = nil, byIDPath: String? = nil,
                applicatorLink: String? = nil, isApplicator: Bool = false, udevInitialized: Bool = true) {
        self.devicePath = devicePath
        self.vendorID = vendorID
        self.productID = productID
        self.serial = serial
        self.manufacturer = manufacturer
        self.product = product
        self.byIDPath = byIDPath
        self.applicatorLink = applicatorLink
        self.isApplicator = isApplicator
        self.udevInitialized = udevInitialized
    }

    /// The path to give `--device`: our link (stable, names the serial), else by-id, else the node.
    public var preferredPath: String { applicatorLink ?? byIDPath ?? devicePath }

    /// `1209:5350`, or `?` for an unknown half.
    public var usbID: String { "\(vendorID ?? "?"):\(productID ?? "?")" }

    enum CodingKeys: String, CodingKey {
        case devicePath = "device"
        case vendorID = "vendor_id"
        case productID = "product_id"
        case serial
        case manufacturer
        case product
        case byIDPath = "by_id"
        case applicatorLink = "link"
        case isApplicator = "applicator"
        case udevInitialized = "udev_initialized"
    }

    /// Absent values are written as `null`, so every object has every key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(devicePath, forKey: .devicePath)
        try container.encode(vendorID, forKey: .vendorID)
        try container.encode(productID, forKey: .productID)
        try container.encode(serial, forKey: .serial)
        try container.encode(manufacturer, forKey: .manufacturer)
        try container.encode(product, forKey: .product)
        try container.encode(byIDPath, forKey: .byIDPath)
        try container.encode(applicatorLink, forKey: .applicatorLink)
        try container.encode(isApplicator, forKey: .isApplicator)
        try container.encode(udevInitialized, forKey: .udevInitialized)
    }
}

/// Why the device list could not be read. `description` is for the technician.
public enum DeviceDiscoveryError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `udev_new` failed (out of memory, or no /sys).
    case udevUnavailable(Errno?)
    /// A libudev call failed while listing devices.
    case enumerationFailed(operation: String, errno: Errno?)

    public var description: String {
        switch self {
        case .udevUnavailable(let errno):
            let cause = errno.map { " (\($0))" } ?? ""
            return "Could not read the list of devices from udev\(cause). Is /sys mounted? "
                + "On a normal Linux desktop this does not happen: restart the computer and try again."
        case .enumerationFailed(let operation, let errno):
            let cause = errno.map { ": \($0)" } ?? ""
            return "Listing the serial devices failed (\(operation)\(cause)). Try again; if it "
                + "keeps failing, check `udevadm info --export-db | head` works on this computer."
        }
    }
}

/// Lists serial devices and finds applicators among them.
public enum DeviceDiscovery {
    /// Every tty with a USB parent, sorted by device path, with `isApplicator` set for those
    /// `match` accepts.
    public static func scan(match: ApplicatorMatch = .default) throws(DeviceDiscoveryError) -> [DiscoveredPort] {
        let context = try UdevContext()
        let records = try context.usbTTYRecords()
        return records.map { port(from: $0, match: match) }.sorted { $0.devicePath < $1.devicePath }
    }

    /// Whether systemd-udevd is running (its control socket exists). Without it there are no
    /// `/dev/serial/by-id` or `/dev/smp` links and our rule's group and mode are not applied.
    public static var udevDaemonIsRunning: Bool {
        guard let context = try? UdevContext() else { return false }
        return context.daemonIsActive
    }

    // MARK: - Pure part (tested without udev)

    /// What libudev told about one tty: its udev properties and its USB device's sysfs attributes.
    struct Record: Sendable, Hashable {
        var devicePath: String
        var properties: [String: String]
        /// `idVendor`, `idProduct`, `serial`, `manufacturer`, `product` of the USB device.
        var usbAttributes: [String: String]
        var initialized: Bool
    }

    static let byIDPrefix = "/dev/serial/by-id/"
    static let applicatorLinkPrefix = "/dev/smp/applicator-"

    static func port(from record: Record, match: ApplicatorMatch) -> DiscoveredPort {
        let properties = record.properties
        func property(_ key: String) -> String? { nonEmpty(properties[key]) }
        func attribute(_ key: String) -> String? { nonEmpty(record.usbAttributes[key]?.trimmingSpaces) }

        let vendorID = (property("ID_VENDOR_ID") ?? attribute("idVendor")).map(ApplicatorMatch.normalisedHex)
        let productID = (property("ID_MODEL_ID") ?? attribute("idProduct")).map(ApplicatorMatch.normalisedHex)
        let serial = property("ID_SERIAL_SHORT") ?? attribute("serial")
        let manufacturer = name(encoded: property("ID_VENDOR_ENC"), plain: property("ID_VENDOR"),
                                database: property("ID_VENDOR_FROM_DATABASE"), sysfs: attribute("manufacturer"),
                                id: vendorID)
        let product = name(encoded: property("ID_MODEL_ENC"), plain: property("ID_MODEL"),
                           database: property("ID_MODEL_FROM_DATABASE"), sysfs: attribute("product"), id: productID)
        let links = (properties["DEVLINKS"] ?? "").split(separator: " ").map(String.init)
        return DiscoveredPort(
            devicePath: property("DEVNAME") ?? record.devicePath,
            vendorID: vendorID, productID: productID, serial: serial,
            manufacturer: manufacturer, product: product,
            byIDPath: links.first { $0.hasPrefix(byIDPrefix) },
            applicatorLink: links.first { $0.hasPrefix(applicatorLinkPrefix) },
            isApplicator: match.matches(vendorID: vendorID, productID: productID, serial: serial),
            udevInitialized: record.initialized)
    }

    /// The device's own string (`_ENC`, with udev's `\xNN` escapes undone) unless it is only the
    /// hex id udev substitutes when the device has none; then the USB id database's name.
    static func name(encoded: String?, plain: String?, database: String?, sysfs: String?, id: String?) -> String? {
        let own = encoded.map(decodeUdevEscapes)?.trimmingSpaces ?? plain?.replacingUnderscores
        if let own, !own.isEmpty, own.lowercased() != id {
            return own
        }
        return database ?? sysfs ?? nonEmpty(own)
    }

    /// Undoes udev's `\xNN` escaping (used in `ID_*_ENC` values and by-id names).
    static func decodeUdevEscapes(_ text: String) -> String {
        var bytes: [UInt8] = []
        let source = Array(text.utf8)
        var index = 0
        while index < source.count {
            if source[index] == UInt8(ascii: "\\"), index + 3 < source.count, source[index + 1] == UInt8(ascii: "x"),
               let high = hexValue(source[index + 2]), let low = hexValue(source[index + 3]) {
                bytes.append(high << 4 | low)
                index += 4
            } else {
                bytes.append(source[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func nonEmpty(_ text: String?) -> String? {
        guard let text, !text.isEmpty else { return nil }
        return text
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var scalars = Substring(self)
        while scalars.first == " " { scalars.removeFirst() }
        while scalars.last == " " { scalars.removeLast() }
        return String(scalars)
    }

    /// udev replaces spaces with `_` in ID_VENDOR / ID_MODEL.
    fileprivate var replacingUnderscores: String {
        String(map { $0 == "_" ? " " : $0 })
    }
}

// MARK: - libudev, each reference owned by a noncopyable value and unref'd in its deinit

/// One `struct udev *`.
private struct UdevContext: ~Copyable {
    let pointer: OpaquePointer

    init() throws(DeviceDiscoveryError) {
        guard let pointer = udev_new() else { throw .udevUnavailable(Sys.currentErrno) }
        self.pointer = pointer
    }

    deinit { udev_unref(pointer) }

    var daemonIsActive: Bool {
        guard let queue = udev_queue_new(pointer) else { return false }
        defer { udev_queue_unref(queue) }
        return udev_queue_get_udev_is_active(queue) == 1
    }

    /// Every device of subsystem "tty" that has a USB device among its parents.
    func usbTTYRecords() throws(DeviceDiscoveryError) -> [DeviceDiscovery.Record] {
        let enumerate = try UdevEnumerate(context: pointer)
        try UdevEnumerate.check(
            "udev_enumerate_add_match_subsystem", udev_enumerate_add_match_subsystem(enumerate.pointer, "tty"))
        try UdevEnumerate.check("udev_enumerate_scan_devices", udev_enumerate_scan_devices(enumerate.pointer))

        var records: [DeviceDiscovery.Record] = []
        var entry = udev_enumerate_get_list_entry(enumerate.pointer)
        while let current = entry {
            entry = udev_list_entry_get_next(current)
            guard let syspath = udev_list_entry_get_name(current) else { continue }
            // A device can vanish between the scan and this call: skip it.
            guard let device = UdevDevice(context: pointer, syspath: syspath) else { continue }
            if let record = device.usbRecord() { records.append(record) }
        }
        return records
    }
}

/// One `struct udev_enumerate *`.
private struct UdevEnumerate: ~Copyable {
    let pointer: OpaquePointer

    init(context: OpaquePointer) throws(DeviceDiscoveryError) {
        guard let pointer = udev_enumerate_new(context) else {
            throw .enumerationFailed(operation: "udev_enumerate_new", errno: Sys.currentErrno)
        }
        self.pointer = pointer
    }

    deinit { udev_enumerate_unref(pointer) }

    /// libudev returns 0 or a negative errno.
    static func check(_ operation: String, _ result: CInt) throws(DeviceDiscoveryError) {
        if result < 0 { throw .enumerationFailed(operation: operation, errno: Errno(rawValue: -result)) }
    }
}

/// One `struct udev_device *` (parents returned by libudev belong to it and are not unref'd).
private struct UdevDevice: ~Copyable {
    let pointer: OpaquePointer

    init?(context: OpaquePointer, syspath: UnsafePointer<CChar>) {
        guard let pointer = udev_device_new_from_syspath(context, syspath) else { return nil }
        self.pointer = pointer
    }

    deinit { udev_device_unref(pointer) }

    /// Nil for a tty without a device node or without a USB parent (virtual consoles, ptys,
    /// on-board UARTs).
    func usbRecord() -> DeviceDiscovery.Record? {
        guard let node = udev_device_get_devnode(pointer),
              let usb = udev_device_get_parent_with_subsystem_devtype(pointer, "usb", "usb_device")
        else { return nil }
        var properties: [String: String] = [:]
        var entry = udev_device_get_properties_list_entry(pointer)
        while let current = entry {
            entry = udev_list_entry_get_next(current)
            guard let name = udev_list_entry_get_name(current) else { continue }
            properties[String(cString: name)] = udev_list_entry_get_value(current).map { String(cString: $0) }
        }
        var attributes: [String: String] = [:]
        for key in ["idVendor", "idProduct", "serial", "manufacturer", "product"] {
            if let value = udev_device_get_sysattr_value(usb, key) { attributes[key] = String(cString: value) }
        }
        return DeviceDiscovery.Record(
            devicePath: String(cString: node), properties: properties, usbAttributes: attributes,
            initialized: udev_device_get_is_initialized(pointer) == 1)
    }
}
