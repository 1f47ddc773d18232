import Testing
@testable import CapsuleRuntime

@Suite struct TerminalFilterTests {
    @Test(arguments: [
        ("plain text\n\twith tab\r", "plain text\n\twith tab\r"),
        ("\u{1B}[31mred\u{1B}[0m", "\u{1B}[31mred\u{1B}[0m\u{1B}[0m"),
        ("\u{1B}[1;32;40mbold\u{1B}[m", "\u{1B}[1;32;40mbold\u{1B}[m\u{1B}[0m"),
        ("\u{1B}[8m\u{1B}[30;40m", "\u{1B}[8m\u{1B}[30;40m\u{1B}[0m"),              // hidden text is reset at the end
        ("\u{1B}]52;c;cm0gLXJmIH4K\u{07}", "^[]52;c;cm0gLXJmIH4K^G"),       // clipboard write
        ("\u{1B}]0;pwned\u{07}", "^[]0;pwned^G"),                             // window title
        ("\u{1B}[6n", "^[[6n"),                                               // cursor position query
        ("\u{1B}[2K\u{1B}[1A", "^[[2K^[[1A"),                                 // erase and move up
        ("\u{9B}31m", "\u{FFFD}31m"),                                         // C1 CSI
        ("a\u{7F}b\u{00}c", "a^?b^@c"),
        ("é 字 🙂", "é 字 🙂"),
    ])
    func filters(input: String, expected: String) {
        var filter = TerminalFilter()
        #expect(filter.filter(input) + filter.flush() == expected)
    }

    @Test func rawBytesAreFilteredAsText() {
        var filter = TerminalFilter()
        #expect(filter.filter(bytes: Array("\u{1B}]0;title\u{07} \u{1B}[31mred".utf8)) == "^[]0;title^G \u{1B}[31mred")
        #expect(filter.filter(bytes: [0x63, 0x61, 0x66, 0xC3]) == "caf") // é cut in two: its start waits
        #expect(filter.filter(bytes: [0xA9, 0x0A]) == "é\n")
        #expect(filter.filter(bytes: [0xFF, 0x41, 0xF0, 0x9F]) == "\u{FFFD}A")
        #expect(filter.filter(bytes: [0x99, 0x82]) == "🙂")
        #expect(filter.filter(bytes: [0xE5, 0xAD]) == "")
        #expect(filter.filter("text") == "\u{FFFD}text") // a cut sequence that text follows stays unfinished
        #expect(filter.filter(bytes: [0xE2]) == "")
        #expect(filter.flush() == "\u{FFFD}\u{1B}[0m")
    }

    @Test func aColourSequenceSplitAcrossChunksStillPasses() {
        var filter = TerminalFilter()
        #expect(filter.filter("x\u{1B}[3") == "x")
        #expect(filter.filter("1mred") == "\u{1B}[31mred")
        #expect(filter.filter("\u{1B}") == "")
        #expect(filter.flush() == "^[\u{1B}[0m")
    }

    @Test func anOverlongSequenceIsNotAColour() {
        var filter = TerminalFilter()
        let long = "\u{1B}[" + String(repeating: "1;", count: 40) + "m"
        #expect(filter.filter(long).hasPrefix("^[["))
    }
}
