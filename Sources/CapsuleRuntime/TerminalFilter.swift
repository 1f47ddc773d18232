/// Makes output of untrusted code safe to print on a terminal: colour and style sequences
/// (SGR, `ESC [ … m`) pass, every other control sequence is shown instead of obeyed — no clipboard
/// or title writes (OSC), no cursor movement over earlier lines, no queries whose answers the
/// terminal would type into our input. Newline, tab and carriage return pass. Stateful, so a
/// colour sequence split across two chunks still passes; one filter per output stream.
/// (A pure text transformation: the runtime itself still knows no terminal.)
public struct TerminalFilter: Sendable {
    private var pending: [Unicode.Scalar] = []
    /// The start of a UTF-8 sequence that raw output (`filter(bytes:)`) ended in the middle of.
    private var partial: [UInt8] = []
    /// A style passed through, so `flush` resets it: the code must not leave the terminal
    /// drawing capsule's own last line (or the shell's prompt) invisible.
    private var styled = false
    private static let longestSGR = 32

    public init() {}

    /// The printable form of `text`, holding back an unfinished escape sequence at its end.
    public mutating func filter(_ text: String) -> String {
        var scalars = pending
        if !partial.isEmpty { // an unfinished sequence that text follows will not be finished
            scalars.append(contentsOf: String(decoding: partial, as: UTF8.self).unicodeScalars)
            partial = []
        }
        scalars.append(contentsOf: text.unicodeScalars)
        pending = []
        var out = String.UnicodeScalarView()
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\u{1B}" {
                switch Self.sgrLength(scalars, from: index) {
                case .complete(let length):
                    out.append(contentsOf: scalars[index..<index + length])
                    styled = true
                    index += length
                    continue
                case .unfinished:
                    pending = Array(scalars[index...])
                    return String(out)
                case .not:
                    break
                }
            }
            Self.appendVisible(scalar, to: &out)
            index += 1
        }
        return String(out)
    }

    /// As `filter(_:)`, for raw output: bytes that are not UTF-8 show as U+FFFD, and a sequence
    /// cut at the end waits for the bytes that finish it.
    public mutating func filter(bytes: [UInt8]) -> String {
        let bytes = partial + bytes
        let unfinished = Self.unfinishedSequenceLength(bytes)
        partial = []
        let filtered = filter(String(decoding: bytes.dropLast(unfinished), as: UTF8.self))
        partial = Array(bytes.suffix(unfinished))
        return filtered
    }

    /// How many bytes at the end of `bytes` begin a UTF-8 sequence that needs more.
    private static func unfinishedSequenceLength(_ bytes: [UInt8]) -> Int {
        for back in stride(from: 1, through: min(3, bytes.count), by: 1) {
            let byte = bytes[bytes.count - back]
            if byte & 0xC0 == 0x80 { continue } // a continuation byte: its lead is further back
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > back ? back : 0
        }
        return 0
    }

    /// Whatever is held back, shown as text, and a style reset if any style passed (at the end of
    /// the output).
    public mutating func flush() -> String {
        defer { pending = []; partial = []; styled = false }
        var out = String.UnicodeScalarView()
        for scalar in pending + String(decoding: partial, as: UTF8.self).unicodeScalars { Self.appendVisible(scalar, to: &out) }
        if styled { out.append(contentsOf: "\u{1B}[0m".unicodeScalars) }
        return String(out)
    }

    private enum SGR { case complete(Int), unfinished, not }

    /// `ESC [` digits and `;` then `m`, within a short length.
    private static func sgrLength(_ scalars: [Unicode.Scalar], from start: Int) -> SGR {
        var index = start + 1
        guard index < scalars.count else { return .unfinished }
        guard scalars[index] == "[" else { return .not }
        index += 1
        while index < scalars.count, index - start < longestSGR {
            let scalar = scalars[index]
            if scalar == "m" { return .complete(index - start + 1) }
            guard scalar == ";" || ("0"..."9").contains(scalar) else { return .not }
            index += 1
        }
        return index - start < longestSGR ? .unfinished : .not
    }

    /// Control characters in caret notation (`^[` for ESC, `^?` for DEL); C1 controls as U+FFFD.
    private static func appendVisible(_ scalar: Unicode.Scalar, to out: inout String.UnicodeScalarView) {
        switch scalar.value {
        case 0x0A, 0x09, 0x0D: out.append(scalar)
        case 0..<0x20: out.append(contentsOf: "^\(Unicode.Scalar(UInt8(scalar.value + 0x40)))".unicodeScalars)
        case 0x7F: out.append(contentsOf: "^?".unicodeScalars)
        case 0x80...0x9F: out.append("\u{FFFD}")
        default: out.append(scalar)
        }
    }
}
