// [sandbox] environment and python_path: which packages the code imports, checked like the rest.
import Testing
@testable import CapsulePolicy

@Suite struct EnvironmentPolicyTests {
    @Test func theKeysSetTheSettingsAndShowAndExplainSayThem() throws {
        let policy = try PolicyLoader.parse("""
            level = "restricted"
            [sandbox]
            environment = "science-3.11"
            python_path = ["/srv/lib/python", "/opt/tools"]
            """, file: "p.toml")
        #expect(policy.pythonEnvironment == "science-3.11")
        #expect(policy.pythonPath == ["/srv/lib/python", "/opt/tools"])
        let shown = policy.settings.filter { $0.table == "sandbox" }.map { "\($0.key) = \($0.value)" }
        #expect(shown.contains("environment = \"science-3.11\"") && shown.contains("python_path = [\"/srv/lib/python\", \"/opt/tools\"]"),
                "\(shown)")
        #expect(policy.explanation.contains("import the packages of the environment science-3.11"))
        #expect(policy.explanation.contains("import modules from (and read) these host directories: /srv/lib/python, /opt/tools"))
        let plain = try PolicyLoader.parse("level = \"sandbox\"\n", file: "p.toml")
        #expect(plain.pythonEnvironment == nil && plain.pythonPath.isEmpty)
        #expect(!plain.settings.contains { $0.key == "environment" || $0.key == "python_path" })
    }

    @Test func anEnvironmentNeedsNoLevelAbovePlainSandbox() throws {
        // Packages add code, not authority: the code they hold runs as confined as the cell's.
        let policy = try PolicyLoader.parse("level = \"sandbox\"\n[sandbox]\nenvironment = \"plots\"\n", file: "p.toml")
        #expect(policy.pythonEnvironment == "plots")
    }

    @Test(arguments: [
        ("level = \"sandbox\"\n[sandbox]\npython_path = [\"/srv/lib\"]",
         "p.toml:3: `sandbox.python_path`: needs level `restricted` or higher; this policy is `sandbox`"),
        ("level = \"restricted\"\n[sandbox]\npython_path = [\"lib\"]",
         "p.toml:3: `sandbox.python_path`: `lib` must be an absolute path without `.` or `..` parts or control characters, like \"/srv/data\""),
        ("level = \"restricted\"\n[sandbox]\npython_path = [\"/tmp/mods\"]",
         "p.toml:3: `sandbox.python_path`: `/tmp/mods` overlaps /tmp, where hosts keep unix sockets a read-only bind would not keep the code from connecting to"),
        ("level = \"restricted\"\n[sandbox]\npython_path = [\"/opt/capsule/envs/x\"]",
         "p.toml:3: `sandbox.python_path`: `/opt/capsule/envs/x` overlaps /opt/capsule, which the sandbox provides itself"),
        ("level = \"restricted\"\n[sandbox]\npython_path = \"/srv/lib\"",
         "p.toml:3: `sandbox.python_path`: must be an array of strings, not \"/srv/lib\""),
        ("level = \"sandbox\"\n[sandbox]\nenvironment = \"../etc\"",
         "p.toml:3: `sandbox.environment`: `../etc` is not an environment's name: 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit (`capsule env list` shows them)"),
        ("level = \"sandbox\"\n[sandbox]\nenvironment = \"\"",
         "p.toml:3: `sandbox.environment`: `` is not an environment's name: 1 to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit (`capsule env list` shows them)"),
        ("level = \"sandbox\"\n[sandbox]\nenvironment = 3",
         "p.toml:3: `sandbox.environment`: must be a string, not 3"),
        ("extends = \"restricted\"\n[sandbox]\npython_path = [\"/srv/lib\"]",
         "p.toml:3: `sandbox.python_path`: `/srv/lib` is not under a path it allows (its readonly_paths or python_path); a policy that extends `restricted` may only narrow it"),
    ])
    func badValuesAreNamed(_ text: String, _ message: String) {
        #expect(parseError(text)?.description == message)
    }

    @Test func environmentNames() {
        for good in ["a", "science", "Plots-2", "py3.11_base", String(repeating: "x", count: 64)] {
            #expect(Policy.isPythonEnvironmentName(good), "\(good)")
        }
        for bad in ["", ".hidden", "-dash", "_under", "a/b", "a b", "é", String(repeating: "x", count: 65), "a\u{0}"] {
            #expect(!Policy.isPythonEnvironmentName(bad), "\(bad)")
        }
    }
}
