/// Makes output of untrusted code safe to print on a terminal: colour and style sequences
/// (SGR, `ESC [ … m`) pass, every other control sequence is shown instead of obeyed — no clipboard
/// or title writes (OSC), no cursor movement over earlier lines, no queries whose answers the
/// terminal would type into our input. Newline, tab and carriage return pass. Stateful, so a
/// colour sequence split across two chunks still passes; one filter per output stream.
/// (A pure text transformation: the runtime itself still knows no terminal.)
public struct TerminalFilter: Sendable {
    private var pending: [Unicode.Scalar] = []
    /// A style passed through, so `flush` resets it: the code must not leave the terminal
    /// drawing capsule's own last line (or the shell's prompt) invisible.
    private var styled = false
    private static let longestSGR = 32

    public init() {}

    /// The printable form of `text`, holding back an unfinished escape sequence at its end.
    public mutating func filter(_ text: String) -> String {
        var scalars = pending
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

    /// Whatever is held back, shown as text, and a style reset if any style passed (at the end of
    /// the output).
    public mutating func flush() -> String {
        defer { pending = []; styled = false }
        var out = String.UnicodeScalarView()
        for scalar in pending { Self.appendVisible(scalar, to: &out) }
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
