import Foundation
import XCTest

@testable import NeedleDriver

/// Device discovery: the pure mapping from udev's view of a tty to a `DiscoveredPort` (with the
/// properties a real applicator has, as seen in the hardware-in-the-loop VM), the JSON shape, the
/// udev rule, and a scan of this machine.
final class DiscoveryTests: XCTestCase {
    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// What `udevadm info /dev/ttyACM0` shows for a CDC-ACM applicator once our rule is installed.
    static let applicatorProperties: [String: String] = [
        "DEVNAME": "/dev/ttyACM0",
        "SUBSYSTEM": "tty",
        "ID_BUS": "usb",
        "ID_VENDOR_ID": "1209",
        "ID_MODEL_ID": "5350",
        "ID_SERIAL_SHORT": "SMP0042",
        "ID_VENDOR": "Example_Clinic_Devices",
        "ID_VENDOR_ENC": "Example\\x20Clinic\\x20Devices",
        "ID_MODEL": "SMP_Applicator",
        "ID_MODEL_ENC": "SMP\\x20Applicator",
        "ID_USB_DRIVER": "cdc_acm",
        "ID_MM_DEVICE_IGNORE": "1",
        "DEVLINKS": "/dev/serial/by-path/pci-0000:00:1d.0-usb-0:1:1.0 "
            + "/dev/smp/applicator-SMP0042 "
            + "/dev/serial/by-id/usb-Example_Clinic_Devices_SMP_Applicator_SMP0042-if00",
    ]

    func record(_ properties: [String: String], usb: [String: String] = [:], initialized: Bool = true,
                node: String = "/dev/ttyACM0") -> DeviceDiscovery.Record {
        DeviceDiscovery.Record(devicePath: node, properties: properties, usbAttributes: usb, initialized: initialized)
    }

    func testAnApplicatorIsRecognisedFromItsUdevProperties() {
        let port = DeviceDiscovery.port(from: record(Self.applicatorProperties), match: .default)
        XCTAssertEqual(port.devicePath, "/dev/ttyACM0")
        XCTAssertEqual(port.vendorID, "1209")
        XCTAssertEqual(port.productID, "5350")
        XCTAssertEqual(port.serial, "SMP0042")
        XCTAssertEqual(port.manufacturer, "Example Clinic Devices")
        XCTAssertEqual(port.product, "SMP Applicator")
        XCTAssertEqual(port.byIDPath, "/dev/serial/by-id/usb-Example_Clinic_Devices_SMP_Applicator_SMP0042-if00")
        XCTAssertEqual(port.applicatorLink, "/dev/smp/applicator-SMP0042")
        XCTAssertTrue(port.isApplicator)
        XCTAssertTrue(port.udevInitialized)
        XCTAssertEqual(port.preferredPath, "/dev/smp/applicator-SMP0042")
        XCTAssertEqual(port.usbID, "1209:5350")
    }

    func testAnotherUSBSerialDeviceIsListedButIsNotAnApplicator() {
        let ftdi: [String: String] = [
            "DEVNAME": "/dev/ttyUSB0", "ID_VENDOR_ID": "0403", "ID_MODEL_ID": "6001", "ID_SERIAL_SHORT": "A10K1234",
            "ID_VENDOR": "FTDI", "ID_MODEL": "FT232R_USB_UART",
            "ID_VENDOR_FROM_DATABASE": "Future Technology Devices International, Ltd",
            "DEVLINKS": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0",
        ]
        let port = DeviceDiscovery.port(from: record(ftdi, node: "/dev/ttyUSB0"), match: .default)
        XCTAssertFalse(port.isApplicator)
        XCTAssertEqual(port.usbID, "0403:6001")
        XCTAssertEqual(port.manufacturer, "FTDI")
        XCTAssertEqual(port.product, "FT232R USB UART")
        XCTAssertNil(port.applicatorLink)
        XCTAssertEqual(port.byIDPath, "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0")
    }

    func testWithoutTheUdevDatabaseTheUSBDevicesSysfsAttributesAreUsed() {
        // No systemd-udevd (a container, an initramfs): only the kernel's uevent properties.
        let properties = ["DEVNAME": "/dev/ttyACM0", "MAJOR": "166", "MINOR": "0"]
        let usb = ["idVendor": "1209", "idProduct": "5350", "serial": "SMP0042", "manufacturer": "Example Clinic Devices",
                   "product": "SMP Applicator"]
        let port = DeviceDiscovery.port(from: record(properties, usb: usb, initialized: false), match: .default)
        XCTAssertTrue(port.isApplicator)
        XCTAssertFalse(port.udevInitialized)
        XCTAssertEqual(port.serial, "SMP0042")
        XCTAssertEqual(port.manufacturer, "Example Clinic Devices")
        XCTAssertNil(port.byIDPath)
        XCTAssertNil(port.applicatorLink)
        XCTAssertEqual(port.preferredPath, "/dev/ttyACM0")
    }

    func testAVendorWithoutANameStringGetsTheUSBDatabaseName() {
        // usb_id writes the hex id into ID_VENDOR when the device has no manufacturer string.
        let properties = ["DEVNAME": "/dev/ttyACM1", "ID_VENDOR_ID": "1209", "ID_MODEL_ID": "0001",
                          "ID_VENDOR": "1209", "ID_VENDOR_ENC": "1209", "ID_VENDOR_FROM_DATABASE": "Generic",
                          "ID_MODEL": "0001"]
        let port = DeviceDiscovery.port(from: record(properties), match: .default)
        XCTAssertEqual(port.manufacturer, "Generic")
        XCTAssertEqual(port.product, "0001", "nothing better is known than the id")
        XCTAssertFalse(port.isApplicator, "same vendor, other product")
    }

    func testAMatchWithASerialAcceptsOnlyThatApplicator() {
        let properties = Self.applicatorProperties
        let wanted = ApplicatorMatch(vendorID: "1209", productID: "5350", serial: "SMP0042")
        let other = ApplicatorMatch(vendorID: "1209", productID: "5350", serial: "SMP0001")
        XCTAssertTrue(DeviceDiscovery.port(from: record(properties), match: wanted).isApplicator)
        XCTAssertFalse(DeviceDiscovery.port(from: record(properties), match: other).isApplicator)
    }

    func testIdsAreComparedWithoutCaseOrPrefix() {
        let match = ApplicatorMatch(vendorID: "0x1209", productID: "0X5350")
        XCTAssertEqual(match, .default)
        XCTAssertTrue(match.matches(vendorID: "1209", productID: "5350", serial: nil))
        XCTAssertTrue(ApplicatorMatch(vendorID: "ABCD", productID: "ef01").matches(vendorID: "abcd", productID: "EF01", serial: "x"))
        XCTAssertFalse(match.matches(vendorID: nil, productID: "5350", serial: nil))
    }

    func testUdevEscapesAreDecoded() {
        XCTAssertEqual(DeviceDiscovery.decodeUdevEscapes("Caf\\xc3\\xa9\\x20Ltd"), "Café Ltd")
        XCTAssertEqual(DeviceDiscovery.decodeUdevEscapes("no\\xZZescape\\x2"), "no\\xZZescape\\x2")
    }

    func testTheJSONObjectHasEveryKeyWithNullForWhatIsUnknown() throws {
        let port = DiscoveredPort(devicePath: "/dev/ttyUSB3", vendorID: "0403", productID: "6001")
        let data = try JSONEncoder().encode([port])
        let objects = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        let object = try XCTUnwrap(objects.first)
        XCTAssertEqual(Set(object.keys), ["device", "vendor_id", "product_id", "serial", "manufacturer", "product",
                                          "by_id", "link", "applicator", "udev_initialized"])
        XCTAssertEqual(object["device"] as? String, "/dev/ttyUSB3")
        XCTAssertTrue(object["serial"] is NSNull)
        XCTAssertEqual(object["applicator"] as? Bool, false)
        XCTAssertEqual(try JSONDecoder().decode([DiscoveredPort].self, from: data), [port])
    }

    /// The rule and `ApplicatorMatch.default` must name the same device, and the rule must do what
    /// the README of the rig verified (symlink, group, mode, uaccess, ModemManager off).
    func testTheUdevRuleMatchesApplicatorMatchAndSortsBeforeSeatLate() throws {
        let url = Self.repositoryRoot.appendingPathComponent("udev/70-smp-applicator.rules")
        XCTAssertLessThan(url.lastPathComponent, "73-seat-late.rules", "uaccess is applied in 73-seat-late.rules")
        let text = try String(contentsOf: url, encoding: .utf8)
        // Rules, continuation lines joined, comments dropped.
        let rules = text.replacingOccurrences(of: "\\\n", with: " ").split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        let tty = rules.filter { $0.contains(#"SUBSYSTEM=="tty""#) }
        XCTAssertFalse(tty.isEmpty)
        let match = ApplicatorMatch.default
        for rule in tty {
            XCTAssertTrue(rule.contains(#"ATTRS{idVendor}=="\#(match.vendorID)""#), rule)
            XCTAssertTrue(rule.contains(#"ATTRS{idProduct}=="\#(match.productID)""#), rule)
        }
        let all = tty.joined(separator: "\n")
        for expected in [#"GROUP="smp""#, #"MODE="0660""#, #"TAG+="uaccess""#, #"ENV{ID_MM_DEVICE_IGNORE}="1""#,
                         #"SYMLINK+="smp/applicator-$env{ID_SERIAL_SHORT}""#] {
            XCTAssertTrue(all.contains(expected), "the tty rules lack \(expected)")
        }
        XCTAssertTrue(all.contains(String(DeviceDiscovery.applicatorLinkPrefix.dropFirst("/dev/".count))))
        let gpio = try XCTUnwrap(rules.first { $0.contains(#"SUBSYSTEM=="gpio""#) })
        for expected in [#"KERNEL=="gpiochip*""#, #"GROUP="smp""#, #"MODE="0660""#] {
            XCTAssertTrue(gpio.contains(expected), gpio)
        }
    }

    /// A real scan of this machine: it must not fail, and whatever it lists is a USB tty.
    func testScanningThisMachineListsOnlyDeviceNodes() throws {
        let ports = try DeviceDiscovery.scan()
        for port in ports {
            XCTAssertTrue(port.devicePath.hasPrefix("/dev/"), port.devicePath)
        }
        XCTAssertEqual(ports.map(\.devicePath), ports.map(\.devicePath).sorted())
        _ = DeviceDiscovery.udevDaemonIsRunning  // must not crash without udevd
    }
}
