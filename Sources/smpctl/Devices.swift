import ArgumentParser
import Foundation
import NeedleDriver

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the connected applicators (and, when there are none, the other USB serial devices).",
        discussion: """
            Applicators are USB serial devices with vendor id \(ApplicatorMatch.default.vendorID) and \
            product id \(ApplicatorMatch.default.productID). Give `run` and `probe` the path shown \
            (/dev/smp/applicator-SERIAL once the udev rule is installed). Exit status 0 when at \
            least one applicator is connected, 69 when none is (or the device list cannot be read).
            """)

    @Flag(help: "Print every USB serial device as a JSON array (applicators have \"applicator\": true).")
    var json = false

    func run() throws {
        let ports: [DiscoveredPort]
        do {
            ports = try DeviceDiscovery.scan()
        } catch {
            Output.err("smpctl: \(error.description)")
            throw ExitCode(ExitStatus.unavailable)
        }
        let applicators = ports.filter(\.isApplicator)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = try encoder.encode(ports)
            Output.out(data + Data("\n".utf8))
        } else if applicators.isEmpty {
            print(Self.nothingFoundReport(others: ports, udevRunning: DeviceDiscovery.udevDaemonIsRunning))
        } else {
            print(Self.foundReport(applicators))
        }
        if applicators.isEmpty { throw ExitCode(ExitStatus.unavailable) }
    }

    static func describe(_ port: DiscoveredPort) -> [String] {
        let name = [port.manufacturer, port.product].compactMap { $0 }.joined(separator: " ")
        var lines = ["  \(port.devicePath)  USB \(port.usbID)" + (name.isEmpty ? "" : "  \(name)")
            + (port.serial.map { "  serial \($0)" } ?? "")]
        if let link = port.applicatorLink { lines.append("      link:  \(link)") }
        if let byID = port.byIDPath { lines.append("      by-id: \(byID)") }
        return lines
    }

    static func foundReport(_ applicators: [DiscoveredPort]) -> String {
        var lines = [applicators.count == 1 ? "1 applicator found:" : "\(applicators.count) applicators found:"]
        for port in applicators {
            lines += describe(port)
            if port.applicatorLink == nil && port.udevInitialized {
                lines.append("      (no /dev/smp link: the udev rule 70-smp-applicator.rules is not installed; "
                    + "install the smpctl package, or from source `sudo make install-udev`)")
            }
        }
        lines.append("Use it with: smpctl run PLAN --device \(applicators[0].preferredPath)")
        return lines.joined(separator: "\n")
    }

    static func nothingFoundReport(others: [DiscoveredPort], udevRunning: Bool) -> String {
        let match = ApplicatorMatch.default
        var lines = ["No applicator found (looked for USB serial devices with vendor \(match.vendorID), product \(match.productID))."]
        if others.isEmpty {
            lines.append("No USB serial devices at all were seen on this computer.")
        } else {
            lines.append("Other USB serial devices seen (not applicators):")
            for port in others { lines += describe(port) }
        }
        lines.append("What to check:")
        lines.append("  1. The applicator is switched on and its USB cable is plugged in at both ends; try another")
        lines.append("     cable (some carry power only) and another USB port.")
        lines.append("  2. The udev rule 70-smp-applicator.rules is installed (in /usr/local/lib/udev/rules.d,")
        lines.append("     /usr/lib/udev/rules.d or /etc/udev/rules.d; the smpctl package puts it there); if not:")
        lines.append("     install the package (or from source: sudo make install-udev), then")
        lines.append("     unplug and replug the applicator.")
        lines.append("  3. What udev knows about a port: udevadm info /dev/ttyACM0 (look for ID_VENDOR_ID and ID_MODEL_ID).")
        lines.append("  4. Whether the kernel saw it: sudo dmesg | tail (look for cdc_acm and ttyACM).")
        if !udevRunning {
            lines.append("Note: udev (systemd-udevd) is not running here, so there are no /dev/serial/by-id or")
            lines.append("/dev/smp links and the rule's group and permissions are not applied.")
        }
        return lines.joined(separator: "\n")
    }
}
