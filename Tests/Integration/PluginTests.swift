// Plugins: a program on the host speaking JSON-RPC on stdio serves a custom capability. A plugin
// that crashes, fails or hangs fails only its call; the next call starts it again.
#if canImport(Glibc)
import Glibc
#endif
import Testing
import CapsuleCapabilities
import CapsulePolicy
import CapsuleRuntime

@Suite(.serialized) struct PluginTests {
    static let plugin = "\(Host.repository)/Tests/Integration/Plugins/misbehaving.py"

    func policy() throws -> Policy {
        try PolicyLoader.parse("""
            level = "trusted"
            [capabilities.custom.misbehaving]
            command = ["/usr/bin/python3", "\(Self.plugin)"]
            """, file: "plugin.toml")
    }

    @Test func theExamplePluginWorksThroughCapsuleRun() throws {
        let scratch = try CLITests.Scratch()
        let policy = try scratch.file("weather.toml", """
            level = "trusted"
            [capabilities.custom.weather]
            command = ["/usr/bin/python3", "\(Host.repository)/examples/plugins/weather.py"]
            """)
        let script = try scratch.file("job.py", """
            import capsule
            print(weather.forecast("Lyon", days=2))
            print(capsule.weather.forecast.__doc__)
            try:
                weather.forecast("Lyon", days=99)
            except ValueError as e:
                print("ValueError:", e)
            """)
        let run = try CLI.run(["run", "--policy", policy, script])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout == """
            [{'day': 1, 'city': 'Lyon', 'sky': 'cloud'}, {'day': 2, 'city': 'Lyon', 'sky': 'rain'}]
            A forecast for a city: one entry a day.
            ValueError: days must be from 1 to 14

            """, "\(run)")
    }

    @Test func aCrashFailsTheCallAndTheNextCallRestartsThePlugin() throws {
        let starts = try Host.temporaryDirectory() + "/starts"
        setenv("CAPSULE_TEST_PLUGIN_STARTS", starts, 1)
        defer { unsetenv("CAPSULE_TEST_PLUGIN_STARTS") }
        let transcript = try Sandboxed.runFresh("""
            print(misbehaving.echo({"a": [1, 2.5, None, b"\\x00\\xff"]}))
            try:
                misbehaving.crash()
            except RuntimeError as e:
                print("RuntimeError:", e)
            try:
                misbehaving.fail()
            except ValueError as e:
                print("ValueError:", e)
            print(misbehaving.echo("back"), sorted(m for m in dir(misbehaving) if not m.startswith("_")))
            """, policy: policy())
        #expect(transcript.lines == [
            "{'a': [1, 2.5, None, b'\\x00\\xff']}",
            "RuntimeError: the plugin custom.misbehaving exited with status 3 before it answered; it starts again on the next call",
            "ValueError: it failed",
            "back ['crash', 'echo', 'fail', 'hang']",
        ], "\(transcript)")
        #expect(Host.readText(starts) == "start\nstart\n", "one start, one restart after the crash")
    }

    @Test func aHungPluginTimesOutAndIsRestarted() throws {
        let policy = try policy()
        let broker = Broker(policy: policy, extra: [PluginCapability(name: "custom.misbehaving",
                                                                     command: ["/usr/bin/python3", Self.plugin], callSeconds: 1)])
        let session = try Session(policy: policy, location: try Sandboxed.location(), broker: broker)
        defer { session.shutdown(grace: 1) }
        let transcript = Sandboxed.run("""
            try:
                misbehaving.hang()
            except TimeoutError as e:
                print("TimeoutError:", e)
            print(misbehaving.echo("alive"))
            """, in: session)
        #expect(transcript.lines == [
            "TimeoutError: the plugin custom.misbehaving did not answer within 1.0 s; it was stopped and starts again on the next call",
            "alive",
        ], "\(transcript)")
    }

    @Test func aPluginThatCannotStartIsAClearError() throws {
        let policy = try PolicyLoader.parse("""
            level = "trusted"
            [capabilities.custom.ghost]
            command = ["/nonexistent/plugin"]
            """, file: "plugin.toml")
        let transcript = try Sandboxed.runFresh("""
            import capsule
            print(capsule.ghost.__doc__)
            try:
                capsule.ghost.anything()
            except AttributeError as e:
                print("AttributeError")
            """, policy: policy)
        #expect(transcript.lines == ["The plugin could not describe itself: the plugin custom.ghost could not be started: /nonexistent/plugin: No such file or directory",
                                     "AttributeError"], "\(transcript)")
    }
}
