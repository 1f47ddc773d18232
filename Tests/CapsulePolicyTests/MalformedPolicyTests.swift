import Testing
@testable import CapsulePolicy

/// A policy text `PolicyLoader.parse` must refuse, and the exact sentence it must refuse it with.
struct Rejected: Sendable, CustomTestStringConvertible {
    let name: String
    let text: String
    let error: String

    init(_ name: String, _ text: String, _ error: String) {
        self.name = name
        self.text = text
        self.error = error
    }

    var testDescription: String { name }
}

private let mustBeALevel = "must be one of \(quotedLevelNames)"
private let missingLevel = "p.toml: `level`: missing; add a line such as level = \"sandbox\" (one of \(quotedLevelNames)), or extends = \"sandbox\""

/// Malformed and hostile policies, each with the exact error (file, line, key and message).
private let rejected: [Rejected] = [
    // MARK: level
    Rejected("empty text", "", missingLevel),
    Rejected("only blank lines and comments", "\n\n   \n# level = \"sandbox\"\n\t\n", missingLevel),
    Rejected("limits but no level", "[limits]\nmemory_mb = 100\n", missingLevel),
    Rejected("level under [limits] is limits.level", "[limits]\nlevel = \"sandbox\"\n", "p.toml:2: `limits.level`: unknown key"),
    Rejected("unknown level", "level = \"sandbx\"", "p.toml:1: `level`: \(mustBeALevel), not \"sandbx\"; did you mean `sandbox`?"),
    Rejected("level in the wrong case", "\n\nlevel = \"Sandbox\"", "p.toml:3: `level`: \(mustBeALevel), not \"Sandbox\"; did you mean `sandbox`?"),
    Rejected("empty level", "level = ''", "p.toml:1: `level`: \(mustBeALevel), not \"\""),
    Rejected("level is an integer", "level = 1", "p.toml:1: `level`: must be a string, not 1"),
    Rejected("level is a boolean", "level = true", "p.toml:1: `level`: must be a string, not true"),
    Rejected("level is an array", "level = [\"sandbox\"]", "p.toml:1: `level`: must be a string, not an array"),
    Rejected("level is an inline table", "level = { name = \"sandbox\" }", "p.toml:1: `level`: must be a string, not a table"),
    Rejected("level is a bare word", "level = sandbox",
             "p.toml:1: `sandbox` is not a value; strings need quotes, like \"sandbox\""),
    Rejected("level set twice", "level = \"sandbox\"\nlevel = \"unrestricted\"", "p.toml:2: `level`: this key is set twice"),
    Rejected("level set twice, quoted the second time", "level = \"sandbox\"\n\"level\" = \"sandbox\"",
             "p.toml:2: `level`: this key is set twice"),

    // MARK: keys and tables
    Rejected("typo in a limit key", limitsHeader + "memroy_mb = 512",
             "p.toml:3: `limits.memroy_mb`: unknown key; did you mean `limits.memory_mb`?"),
    Rejected("timeout without its unit", limitsHeader + "timeout = 5",
             "p.toml:3: `limits.timeout`: unknown key; did you mean `limits.timeout_s`?"),
    Rejected("typo in description", "level = \"sandbox\"\ndescripton = \"x\"",
             "p.toml:2: `descripton`: unknown key; did you mean `description`?"),
    Rejected("unknown limit, nothing close", limitsHeader + "gpu_count = 1", "p.toml:3: `limits.gpu_count`: unknown key"),
    Rejected("limit key outside [limits]", "level = \"sandbox\"\nmemory_mb = 512", "p.toml:2: `memory_mb`: unknown key; did you mean `limits.memory_mb`?"),
    Rejected("dotted key inside [limits]", limitsHeader + "limits.max_fds = 20",
             "p.toml:3: `limits.limits.max_fds`: unknown key"),
    Rejected("description inside [limits]", limitsHeader + "description = \"x\"",
             "p.toml:3: `limits.description`: unknown key"),
    Rejected("empty quoted key", "level = \"sandbox\"\n\"\" = 1", "p.toml:2: `\"\"`: unknown key"),
    Rejected("typo in the table name", "level = \"sandbox\"\n[limit]\nmemory_mb = 100",
             "p.toml:2: `limit`: unknown table; did you mean `limits`?"),
    Rejected("table name in the wrong case", "level = \"sandbox\"\n[Limits]",
             "p.toml:2: `Limits`: unknown table; did you mean `limits`?"),
    Rejected("unknown table, nothing close", "level = \"sandbox\"\n[network]\nmode = \"host\"",
             "p.toml:2: `network`: unknown table"),
    Rejected("unknown sub-table", "level = \"sandbox\"\n[limits.cgroup]", "p.toml:2: `limits.cgroup`: unknown table"),
    Rejected("unknown table is reported before a missing level", "[limts]",
             "p.toml:1: `limts`: unknown table; did you mean `limits`?"),
    Rejected("duplicate limit key", limitsHeader + "max_fds = 20\nmax_fds = 30", "p.toml:4: `limits.max_fds`: this key is set twice"),
    Rejected("duplicate key, dotted then under the table", "level = \"sandbox\"\nlimits.max_fds = 20\n[limits]\nmax_fds = 30",
             "p.toml:4: `limits.max_fds`: this key is set twice"),
    Rejected("duplicate table", limitsHeader + "max_fds = 20\n\n[limits]\n", "p.toml:5: `limits`: this table is defined twice"),
    Rejected("duplicate table spelled with spaces", limitsHeader + "[ limits ]", "p.toml:3: `limits`: this table is defined twice"),
    Rejected("array of tables", "level = \"sandbox\"\n[[limits]]\nmemory_mb = 100",
             "p.toml:2: arrays of tables ([[...]]) are not used in policies (column 2)"),
    Rejected("array of tables, dotted and indented", "level = \"sandbox\"\n  [[array.of.tables]]",
             "p.toml:2: arrays of tables ([[...]]) are not used in policies (column 4)"),
    Rejected("empty table header", "[]", "p.toml:1: expected a key (column 2)"),
    Rejected("table header not closed", "level = \"sandbox\"\n[limits", "p.toml:2: expected `]` (column 8)"),
    Rejected("text after a table header", "level = \"sandbox\"\n[limits] x", "p.toml:2: unexpected text after the table header (column 10)"),
    Rejected("missing equals sign", "level \"sandbox\"", "p.toml:1: expected `=` (column 7)"),
    Rejected("colon instead of equals", "level: \"sandbox\"", "p.toml:1: expected `=` (column 6)"),
    Rejected("a key alone", limitsHeader + "memory_mb", "p.toml:3: expected `=` (column 10)"),
    Rejected("empty key", "= \"sandbox\"", "p.toml:1: expected a key (column 1)"),
    Rejected("empty part in a dotted key", "level = \"sandbox\"\nlimits..max_fds = 20", "p.toml:2: expected a key (column 8)"),
    Rejected("dotted key ending in a dot", "limits. = 1", "p.toml:1: expected a key (column 9)"),
    Rejected("missing value", "level =", "p.toml:1: expected a value (column 8)"),
    Rejected("missing value, trailing spaces", "level =   \t", "p.toml:1: expected a value (column 12)"),

    // MARK: limit values
    Rejected("string for an integer", limitsHeader + "memory_mb = \"512\"",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not \"512\""),
    Rejected("literal string for an integer", limitsHeader + "memory_mb = '512'",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not \"512\""),
    Rejected("float for an integer", limitsHeader + "memory_mb = 512.0",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not 512.0"),
    Rejected("exponent for an integer", limitsHeader + "memory_mb = 1e3",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not 1000.0"),
    Rejected("boolean for an integer", limitsHeader + "max_fds = true",
             "p.toml:3: `limits.max_fds`: must be a whole number from 16 to 65536, not true"),
    Rejected("array for an integer", limitsHeader + "max_processes = [1, 2]",
             "p.toml:3: `limits.max_processes`: must be a whole number from 1 to 4096, not an array"),
    Rejected("inline table for an integer", limitsHeader + "max_file_bytes = { value = 1 }",
             "p.toml:3: `limits.max_file_bytes.value`: unknown key"),
    Rejected("negative", limitsHeader + "memory_mb = -512",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not -512"),
    Rejected("zero", limitsHeader + "cpu_seconds = 0",
             "p.toml:3: `limits.cpu_seconds`: must be a whole number from 1 to 86400, not 0"),
    Rejected("negative zero", limitsHeader + "workspace_mb = -0",
             "p.toml:3: `limits.workspace_mb`: must be a whole number from 1 to 1048576, not 0"),
    Rejected("one below the minimum", limitsHeader + "max_fds = 15",
             "p.toml:3: `limits.max_fds`: must be a whole number from 16 to 65536, not 15"),
    Rejected("one above the maximum", limitsHeader + "max_frame_bytes = 1_073_741_825",
             "p.toml:3: `limits.max_frame_bytes`: must be a whole number from 8388608 to 1073741824, not 1073741825"),
    Rejected("huge output limit", limitsHeader + "max_output_bytes = 1099511627777",
             "p.toml:3: `limits.max_output_bytes`: must be a whole number from 1 to 1099511627776, not 1099511627777"),
    Rejected("Int64.max", limitsHeader + "memory_mb = 9223372036854775807",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not 9223372036854775807"),
    Rejected("Int64.min", limitsHeader + "memory_mb = -9223372036854775808",
             "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not -9223372036854775808"),
    Rejected("integer too large for Int64", limitsHeader + "memory_mb = 9223372036854775808",
             "p.toml:3: the number 9223372036854775808 is too large"),
    Rejected("twenty nines", limitsHeader + "workspace_mb = 99999999999999999999",
             "p.toml:3: the number 99999999999999999999 is too large"),
    Rejected("bare word for an integer", limitsHeader + "memory_mb = lots",
             "p.toml:3: `lots` is not a value; strings need quotes, like \"lots\""),
    Rejected("unit after the number", limitsHeader + "memory_mb = 512 MB",
             "p.toml:3: unexpected text after the value of `memory_mb` (column 17)"),
    Rejected("unit glued to the number", limitsHeader + "memory_mb = 512MB",
             "p.toml:3: `512MB` is not a value; strings need quotes, like \"512MB\""),
    Rejected("double underscore", limitsHeader + "memory_mb = 1__000",
             "p.toml:3: `1__000` is not a value; strings need quotes, like \"1__000\""),
    Rejected("leading underscore", limitsHeader + "memory_mb = _512",
             "p.toml:3: `_512` is not a value; strings need quotes, like \"_512\""),
    Rejected("trailing underscore", limitsHeader + "memory_mb = 512_",
             "p.toml:3: `512_` is not a value; strings need quotes, like \"512_\""),
    Rejected("underscore next to the decimal point", limitsHeader + "timeout_s = 1_.5",
             "p.toml:3: `1_.5` is not a value; strings need quotes, like \"1_.5\""),
    Rejected("sign-less infinity", limitsHeader + "timeout_s = inf",
             "p.toml:3: `inf` is not a value; strings need quotes, like \"inf\""),
    Rejected("nan", limitsHeader + "timeout_s = nan",
             "p.toml:3: `nan` is not a value; strings need quotes, like \"nan\""),
    Rejected("a leading decimal point", limitsHeader + "timeout_s = .5",
             "p.toml:3: `.5` is not a value; strings need quotes, like \".5\""),

    // MARK: timeout_s (seconds, integer or float, 0.1...86400)
    Rejected("timeout too small", limitsHeader + "timeout_s = 0.01",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not 0.01"),
    Rejected("timeout 1e9", limitsHeader + "timeout_s = 1e9",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not 1000000000.0"),
    Rejected("timeout zero", limitsHeader + "timeout_s = 0",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not 0"),
    Rejected("timeout a day and a second", limitsHeader + "timeout_s = 86401",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not 86401"),
    Rejected("timeout a day and a half second", limitsHeader + "timeout_s = 86400.5",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not 86400.5"),
    Rejected("timeout negative", limitsHeader + "timeout_s = -0.5",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not -0.5"),
    Rejected("timeout with a unit in a string", limitsHeader + "timeout_s = \"30s\"",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not \"30s\""),
    Rejected("timeout boolean", limitsHeader + "timeout_s = false",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not false"),
    Rejected("timeout array", limitsHeader + "timeout_s = [30]",
             "p.toml:3: `limits.timeout_s`: must be a number of seconds from 0.1 to 86400, not an array"),
    Rejected("timeout_s outside [limits]", "level = \"sandbox\"\ntimeout_s = 5", "p.toml:2: `timeout_s`: unknown key; did you mean `limits.timeout_s`?"),

    // MARK: description
    Rejected("description is a number", "level = \"sandbox\"\ndescription = 5", "p.toml:2: `description`: must be a string, not 5"),
    Rejected("description is an array", "level = \"sandbox\"\ndescription = [\"a\"]", "p.toml:2: `description`: must be a string, not an array"),
    Rejected("description is a boolean", "description = true\nlevel = \"sandbox\"", "p.toml:1: `description`: must be a string, not true"),

    // MARK: strings
    Rejected("unterminated string", "level = \"sandbox", "p.toml:1: the string is not closed with `\"` on this line (column 17)"),
    Rejected("unterminated literal string", "level = 'sandbox", "p.toml:1: the string is not closed with `'` on this line (column 17)"),
    Rejected("string ending in a backslash", "level = \"sandbox\\", "p.toml:1: the string is not closed with `\"` on this line (column 18)"),
    Rejected("escaped closing quote", "level = \"sandbox\\\"", "p.toml:1: the string is not closed with `\"` on this line (column 19)"),
    Rejected("string continued on the next line", "description = \"abc\ndef\"\nlevel = \"sandbox\"",
             "p.toml:1: the string is not closed with `\"` on this line (column 19)"),
    Rejected("multi-line basic string", "level = \"sandbox\"\ndescription = \"\"\"a\"\"\"",
             "p.toml:2: multi-line strings are not supported in policies (column 15)"),
    Rejected("multi-line basic string over lines", "level = \"sandbox\"\ndescription = \"\"\"\nfirst\nsecond\n\"\"\"",
             "p.toml:2: multi-line strings are not supported in policies (column 15)"),
    Rejected("Windows path with backslashes", "level = \"sandbox\"\ndescription = \"C:\\path\"",
             "p.toml:2: invalid escape `\\p` (column 20)"),
    Rejected("hex escape", "level = \"sandbox\"\ndescription = \"\\x41\"", "p.toml:2: invalid escape `\\x` (column 18)"),
    Rejected("escaped single quote", "level = \"sandbox\"\ndescription = \"it\\'s\"", "p.toml:2: invalid escape `\\'` (column 20)"),
    Rejected("short \\u escape", "level = \"sandbox\"\ndescription = \"\\u12\"", "p.toml:2: invalid \\u escape (column 18)"),
    Rejected("\\u escape, not hex", "level = \"sandbox\"\ndescription = \"\\uZZZZ\"", "p.toml:2: invalid \\u escape (column 18)"),
    Rejected("\\u escape of a surrogate", "level = \"sandbox\"\ndescription = \"\\uD800\"", "p.toml:2: invalid \\u escape (column 18)"),
    Rejected("\\U escape past U+10FFFF", "level = \"sandbox\"\ndescription = \"\\U00110000\"", "p.toml:2: invalid \\u escape (column 18)"),
    Rejected("\\u escape at the end of the line", "level = \"sandbox\"\ndescription = \"\\u", "p.toml:2: invalid \\u escape (column 18)"),
    Rejected("control character in a string", "level = \"sandbox\"\ndescription = \"a\u{01}b\"",
             "p.toml:2: control character in a string (column 17)"),
    Rejected("NUL in a string", "level = \"sandbox\"\ndescription = \"\u{0}\"", "p.toml:2: control character in a string (column 16)"),
    Rejected("escape character in a level", "level = \"sand\u{1B}[0mbox\"", "p.toml:1: control character in a string (column 14)"),

    // MARK: garbage
    Rejected("garbage after a value", "level = \"sandbox\" x", "p.toml:1: unexpected text after the value of `level` (column 19)"),
    Rejected("two values", "level = \"sandbox\" \"trusted\"", "p.toml:1: unexpected text after the value of `level` (column 19)"),
    Rejected("statement separator", "level = \"sandbox\"; rm -rf /", "p.toml:1: unexpected text after the value of `level` (column 18)"),
    Rejected("two assignments", "level = \"sandbox\"\nlimits.max_fds = 20 = 30", "p.toml:2: unexpected text after the value of `limits.max_fds` (column 21)"),
    Rejected("array missing a comma", "level = \"sandbox\"\ntags = [1 2]", "p.toml:2: expected `,` or `]` in the array (column 11)"),
    Rejected("array not closed", "level = \"sandbox\"\ntags = [\"a\",", "p.toml:2: the array is not closed with `]` (column 13)"),
    Rejected("array not closed after a value", "level = \"sandbox\"\ntags = [\"a\"", "p.toml:2: the array is not closed with `]` (column 12)"),
    Rejected("inline table not closed", "level = \"sandbox\"\nx = {a = 1,", "p.toml:2: an inline table must close on the same line with `}` (column 12)"),
    Rejected("inline table missing a comma", "level = \"sandbox\"\nx = {a = 1 b = 2}", "p.toml:2: expected `,` or `}` in the inline table (column 12)"),
    Rejected("inline table member set twice", "level = \"sandbox\"\nx = { a = 1, a = 2 }", "p.toml:2: `a` is set twice in this table (column 16)"),
    Rejected("arrays nested 40 deep", "level = \"sandbox\"\nx = " + String(repeating: "[", count: 40) + String(repeating: "]", count: 40),
             "p.toml:2: values are nested too deeply (column 37)"),
    Rejected("inline tables nested 40 deep", "x = " + String(repeating: "{a=", count: 40) + "1" + String(repeating: "}", count: 40),
             "p.toml:1: values are nested too deeply (column 101)"),
    Rejected("smart quotes from a word processor", "level = \u{201C}sandbox\u{201D}",
             "p.toml:1: `\u{201C}sandbox\u{201D}` is not a value; strings need quotes, like \"\u{201C}sandbox\u{201D}\""),
    Rejected("guillemets", "level = «sandbox»", "p.toml:1: `«sandbox»` is not a value; strings need quotes, like \"«sandbox»\""),
    Rejected("accented key", "lévél = \"sandbox\"", "p.toml:1: expected `=` (column 2)"),
    Rejected("emoji key", "🔥 = \"sandbox\"", "p.toml:1: expected a key (column 1)"),
    Rejected("no-break space before equals", "level\u{A0}= \"sandbox\"", "p.toml:1: expected `=` (column 6)"),
    Rejected("NUL at the start of a line", "level = \"sandbox\"\n\u{0}", "p.toml:2: expected a key (column 1)"),
    Rejected("NUL after a value", "level = \"sandbox\"\u{0}", "p.toml:1: unexpected text after the value of `level` (column 18)"),
    Rejected("shell script", "#!/bin/sh\necho hi", "p.toml:2: expected `=` (column 6)"),
    Rejected("JSON instead of TOML", "{\"level\": \"sandbox\"}", "p.toml:1: expected a key (column 1)"),
    Rejected("YAML instead of TOML", "level: sandbox\nlimits:\n  memory_mb: 100", "p.toml:1: expected `=` (column 6)"),

    // MARK: inline tables and arrays parse, but the policy has no such keys
    Rejected("an array of strings", "level = \"sandbox\"\ntags = [\"a\", 'b', [1, 2.5, true], {}]", "p.toml:2: `tags`: unknown key"),
    Rejected("nested inline table", "level = \"sandbox\"\nnetwork = { allow = { hosts = [\"example.com\"] } }", "p.toml:2: `network.allow.hosts`: unknown key"),
]

@Suite struct MalformedPolicyTests {
    @Test func thereAreEnoughCases() {
        #expect(rejected.count >= 30)
        // Each case is distinct, so a copy-paste slip cannot hide one.
        #expect(Set(rejected.map(\.name)).count == rejected.count)
        #expect(Set(rejected.map(\.text)).count == rejected.count)
    }

    @Test(arguments: rejected)
    func isRejectedWithTheExactMessage(_ policy: Rejected) {
        #expect(parseError(policy.text)?.description == policy.error)
    }

    @Test func errorFieldsAreSeparate() throws {
        let error = try #require(parseError(limitsHeader + "memroy_mb = 512"))
        #expect(error.file == "p.toml")
        #expect(error.line == 3)
        #expect(error.key == "limits.memroy_mb")
        #expect(error.message == "unknown key; did you mean `limits.memory_mb`?")

        let missing = try #require(parseError(""))
        #expect(missing.line == nil)
        #expect(missing.key == "level")

        let syntax = try #require(parseError("level = \"sandbox\" x"))
        #expect(syntax.line == 1)
        #expect(syntax.key == nil)
    }

    @Test func theFileNameIsTheOneGiven() {
        #expect(parseError("level = 1", file: "/etc/capsule/my policy.toml")?.description
            == "/etc/capsule/my policy.toml:1: `level`: must be a string, not 1")
    }

    @Test func lineNumbersCountCommentsAndBlankLines() {
        let text = """
            # A policy.

            # level first
            level = "sandbox"   # trailing comment

            [limits]   # the table
            # the culprit is next
            max_fds = 1
            """
        #expect(parseError(text)?.description == "p.toml:8: `limits.max_fds`: must be a whole number from 16 to 65536, not 1")
    }

    @Test func theFirstErrorWins() {
        // A syntax error on a later line is reported before a semantic one on an earlier line.
        #expect(parseError("level = \"nope\"\n[limits]\nmemory_mb = 1\nx = \"")?.description
            == "p.toml:4: the string is not closed with `\"` on this line (column 6)")
        // Within the policy, keys are checked in file order.
        #expect(parseError(limitsHeader + "memory_mb = 1\nmax_fds = 1")?.description
            == "p.toml:3: `limits.memory_mb`: must be a whole number from 64 to 1048576, not 1")
    }
}
