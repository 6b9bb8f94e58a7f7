import Foundation

/// The records keep UTC (`2026-12-06T09:42:55.608Z`); people read the clinic's local time. The
/// zone is the process's (TZ, else /etc/localtime) and is always named, so a time read on
/// another computer is never taken for that computer's.
public enum LocalTime {
    /// The recorded timestamp as a date; nil when it is not one of ours.
    public static func date(_ stamp: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: stamp) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: stamp)
    }

    /// "2026-12-06 10:42:55 GMT+1": local time to the second, with its zone; the stamp as it
    /// is when it cannot be read.
    public static func display(_ stamp: String, timeZone: TimeZone = .current) -> String {
        guard let date = date(stamp) else { return stamp }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = timeZone
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: date) + " " + zoneName(timeZone, at: date)
    }

    /// "UTC", "CET", or "UTC+05:30" where the zone has no common abbreviation.
    static func zoneName(_ zone: TimeZone, at date: Date) -> String {
        let seconds = zone.secondsFromGMT(for: date)
        if seconds == 0 { return "UTC" }
        if let abbreviation = zone.abbreviation(for: date), abbreviation.first?.isLetter == true,
           !abbreviation.hasPrefix("GMT") {
            return abbreviation
        }
        let sign = seconds < 0 ? "-" : "+"
        let minutes = abs(seconds) / 60
        return String(format: "UTC%@%02d:%02d", sign, minutes / 60, minutes % 60)
    }
}
