// `capsule repl` with its standard input a pipe: statements read as `python3 -i` reads them, run
// one at a time in one session, each result printed as the interactive interpreter prints it.
import Testing
import CapsuleOS
import CapsuleRuntime

@Suite("capsule repl, scripted") struct ReplTests {
    func repl(_ input: String, policy: String = "sandbox") throws -> CLIRun {
        let scratch = try CLITests.Scratch()
        return try CLI.run(["repl", "--policy", policy], stdin: try scratch.file("input.py", input))
    }

    @Test func statementsRunOneAtATimeInOneSessionAndExitLeavesWithItsStatus() throws {
        let run = try repl("""
            x = 21
            x * 2
            for i in range(3):
                print(i)
            print("done")
            def f(n):
                return n + 1

            f(1)
            if x > 1:
                y = 1
            else:
                y = 2
            y
            1/0
            x
            print("x" * 3) or 1
            [
            1,
            2]
            import sys; sys.exit(3)
            print("never")

            """)
        // Every trailing expression's value once, as repr; a block ends at the next statement at the margin.
        #expect(run.stdout == "42\n0\n1\n2\ndone\n2\n1\n21\nxxx\n1\n[1, 2]\n", "\(run)")
        #expect(run.status == 3, "exit()'s status is the REPL's\n\(run)")
        #expect(run.stderr.contains("ZeroDivisionError: division by zero"), "\(run)")
        #expect(run.stderr.contains(#"File "<stdin>", line 1"#), "\(run)")
    }

    @Test func aSyntaxErrorIsReportedAndTheSessionGoesOn() throws {
        let run = try repl("x = 1\ndef (:\nx + 1\n")
        #expect(run.stdout == "2\n", "\(run)")
        #expect(run.stderr.contains("SyntaxError"), "\(run)")
        #expect(run.status == 0, "the end of input ends the REPL with 0\n\(run)")
    }

    @Test func anUnfinishedBlockAtTheEndOfInputStillRuns() throws {
        let run = try repl("for i in range(2):\n    print(i)")
        #expect(run.stdout == "0\n1\n", "\(run)")
        #expect(run.status == 0, "\(run)")
    }

    @Test func aMemoryErrorIsReportedAndTheStateIsKept() throws {
        let run = try repl("x = 1\nx\nb = bytearray(10**10)\nx\n")
        #expect(run.stdout == "1\n1\n", "\(run)")
        #expect(run.stderr.contains("MemoryError"), "\(run)")
    }
}

@Suite("capsule repl, on a terminal") struct ReplTerminalTests {
    @Test func linesAreEditedBlocksContinueAndControlCStopsTheCodeNotTheREPL() throws {
        let term = try TerminalRun(["repl", "--policy", "sandbox"])
        #expect(term.waitFor(">>> "), "\(term.text)")
        term.type("x = 4O\u{7f}0\r") // a typo taken back with Backspace
        term.type("if x:\r")
        #expect(term.waitFor("... "), "\(term.text)")
        term.type("print(x + 2)\r") // indented for us; the blank line ends the block
        term.type("\r")
        #expect(term.waitFor("42\r\n"), "\(term.text)")
        term.type("import time\r")
        term.type("time.sleep(60)\r")
        term.watch(seconds: 1)
        term.type("\u{03}")
        #expect(term.waitFor("KeyboardInterrupt"), "\(term.text)")
        term.type("x\r")
        #expect(term.waitFor("40\r\n"), "the session kept its state\n\(term.text)")
        term.type("\u{1b}[A\u{1b}[A\u{1b}[B\u{05} + 1\r") // history: up twice, down once to `x`, edited at its end
        #expect(term.waitFor("41\r\n"), "\(term.text)")
        // ^D at the prompt (typed while code runs, the terminal's own line discipline takes it).
        let deadline = OS.now() + 30_000_000_000
        while !term.text.hasSuffix(">>> \u{1b}[K") && OS.now() < deadline { term.watch(seconds: 0.05) }
        term.type("\u{04}")
        #expect(term.finish() == 0, "\(term.text)")
    }
}
