// [sandbox] preload: modules every session imports before its first execution.
import Testing
@testable import CapsulePolicy

@Suite struct PreloadPolicyTests {
    @Test func theKeyListsModulesAndShowAndExplainSayThem() throws {
        let policy = try PolicyLoader.parse("level = \"sandbox\"\n[sandbox]\npreload = [\"pandas\", \"matplotlib.pyplot\"]\n", file: "p.toml")
        #expect(policy.preload == ["pandas", "matplotlib.pyplot"])
        #expect(policy.settings.contains { $0.key == "preload" && $0.value == "[\"pandas\", \"matplotlib.pyplot\"]" })
        #expect(policy.explanation.contains("find these modules imported before its first execution: pandas, matplotlib.pyplot"))
        #expect(try PolicyLoader.parse("level = \"sandbox\"\n", file: "p.toml").preload.isEmpty)
    }

    @Test(arguments: [
        ("[sandbox]\npreload = \"pandas\"", "p.toml:3: `sandbox.preload`: must be an array of strings, not \"pandas\""),
        ("[sandbox]\npreload = [\"os; import evil\"]",
         "p.toml:3: `sandbox.preload`: `os; import evil` is not a module's name: dotted Python identifiers, like \"pandas\" or \"matplotlib.pyplot\""),
        ("[sandbox]\npreload = [\"a..b\"]",
         "p.toml:3: `sandbox.preload`: `a..b` is not a module's name: dotted Python identifiers, like \"pandas\" or \"matplotlib.pyplot\""),
        ("[sandbox]\npreload = [\"\"]",
         "p.toml:3: `sandbox.preload`: `` is not a module's name: dotted Python identifiers, like \"pandas\" or \"matplotlib.pyplot\""),
        ("[sandbox]\npreload = [" + Array(repeating: "\"m\"", count: 65).joined(separator: ", ") + "]",
         "p.toml:3: `sandbox.preload`: may list at most 64 modules"),
    ])
    func badValuesAreNamed(_ text: String, _ message: String) {
        #expect(parseError("level = \"sandbox\"\n" + text)?.description == message)
    }
}
