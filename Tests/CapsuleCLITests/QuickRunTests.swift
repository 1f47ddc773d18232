// `capsule run`'s quick parse (Run.quickly) against ArgumentParser's own: the same command for
// every form it takes, and nil for every form it must leave to ArgumentParser.
import ArgumentParser
import Testing
@testable import capsule

@Suite struct QuickRunTests {
    @Test(arguments: [
        ["job.py"],
        ["--policy", "sandbox.toml", "job.py"],
        ["--policy", "standard", "job.py", "one", "two words", ""],
        ["--audit", "/tmp/audit.jsonl", "--policy", "restricted", "job.py"],
        ["--approver", "/usr/local/bin/approve --strict", "--approval-timeout", "2.5", "job.py"],
        ["--display-dir", "out", "--report", "/tmp/capsule-quick-run-report.json", "job.py", "x"],
    ]) func theFormsItTakesParseAsArgumentParserParsesThem(arguments: [String]) throws {
        let quick = try #require(Run.quickly(arguments), "\(arguments)")
        let parsed = try Run.parse(arguments)
        // The descriptions show every property wrapper's state, so an option the quick parse
        // forgot (left unparsed) differs here.
        #expect(String(describing: quick) == String(describing: parsed), "\(arguments)")
        #expect(String(describing: quick).contains("job.py"))
    }

    @Test(arguments: [
        [], ["--help"], ["-h"], ["--policy"], ["--policy", "sandbox"], ["--policy=sandbox", "job.py"],
        ["--policy", "a", "--policy", "b", "job.py"], ["--unknown", "x", "job.py"], ["--", "job.py"],
        ["job.py", "--verbose"], ["job.py", "-x"], ["--approver", "-x", "job.py"], [""],
        ["--approval-timeout", "0", "job.py"], ["--approval-timeout", "soon", "job.py"], ["--report", "", "job.py"],
        ["--report", "/nonexistent-directory/r.json", "job.py"], ["--version"],
    ]) func everyOtherFormIsLeftToArgumentParser(arguments: [String]) {
        #expect(Run.quickly(arguments) == nil, "\(arguments)")
    }
}
