// [sandbox] python_subprocess: whether sys.executable starts Python again, checked like the rest.
import Testing
@testable import CapsulePolicy

@Suite struct PythonSubprocessPolicyTests {
    @Test func theKeySetsItAndShowAndExplainSayIt() throws {
        let policy = try PolicyLoader.parse("level = \"sandbox\"\n[sandbox]\npython_subprocess = true\n", file: "p.toml")
        #expect(policy.pythonSubprocess)
        #expect(policy.settings.contains { $0.table == "sandbox" && $0.key == "python_subprocess" && $0.value == "true" })
        #expect(policy.explanation.contains("start Python itself again (sys.executable), under the same sandbox; no other program"))
        let plain = try PolicyLoader.parse("level = \"sandbox\"\n", file: "p.toml")
        #expect(!plain.pythonSubprocess && !plain.settings.contains { $0.key == "python_subprocess" })
        #expect(!plain.explanation.contains("start Python"))
    }

    @Test func aPolicyMayTurnOffWhatItsBaseAllowsButNotTurnOnWhatItDoesNot() throws {
        let base = try PolicyLoader.parse("level = \"restricted\"\n[sandbox]\npython_subprocess = true\n", file: "base.toml")
        var child = base
        child.pythonSubprocess = false
        #expect(PolicyRules.narrowingProblems(child, base: base, lines: [:], file: "c.toml").isEmpty)
        #expect(PolicyRules.narrowingProblems(base, base: child, lines: [:], file: "c.toml").map(\.description)
                == ["c.toml: `sandbox.python_subprocess`: true is not allowed; a policy that extends `base.toml` may only narrow it"])
    }

    @Test(arguments: [
        ("level = \"sandbox\"\n[sandbox]\npython_subprocess = \"yes\"",
         "p.toml:3: `sandbox.python_subprocess`: must be true or false, not \"yes\""),
        ("extends = \"sandbox\"\n[sandbox]\npython_subprocess = true",
         "p.toml:3: `sandbox.python_subprocess`: true is not allowed; a policy that extends `sandbox` may only narrow it"),
        ("level = \"sandbox\"\n[sandbox]\npython_subprocesses = true",
         "p.toml:3: `sandbox.python_subprocesses`: unknown key; did you mean `sandbox.python_subprocess`?"),
    ])
    func badValuesAreNamed(_ text: String, _ message: String) {
        #expect(parseError(text)?.description == message)
    }
}
