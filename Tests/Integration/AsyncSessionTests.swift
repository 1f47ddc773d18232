// The async Session API: executions as async sequences of events, one at a time per session, input
// answered from another task, interrupts from anywhere, and many sessions on a few loop threads
// where one session's flood does not hold up another.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Testing
import CapsuleCapabilities
import CapsuleOS
import CapsulePolicy
import CapsuleProtocol
import CapsuleRuntime
import CapsuleSandbox

/// Everything an execution yielded, in order.
private struct Collected: Sendable {
    var events: [SessionEvent] = []
    var outcome: ExecutionOutcome?

    var stdout: String {
        events.map { event in
            switch event {
            case .stream(.stdout, let text): text
            case .streamData(.stdout, let bytes): String(decoding: bytes, as: UTF8.self)
            default: ""
            }
        }.joined()
    }

    var results: [String] {
        events.compactMap { if case .result(let data) = $0 { data["text/plain"] } else { nil } }
    }

    var finishedOK: Bool {
        if case .finished(.ok, nil, _, nil)? = outcome { return true }
        return false
    }
}

private func collect(_ execution: Execution, onEvent: (SessionEvent) -> Void = { _ in }) async -> Collected {
    var collected = Collected()
    for await item in execution {
        switch item {
        case .event(let event):
            collected.events.append(event)
            onEvent(event)
        case .done(let outcome):
            collected.outcome = outcome
        }
    }
    return collected
}

private func open(_ policy: Policy = Sandboxed.policy(), loop: EventLoop? = nil) async throws -> Session {
    try await Session.open(policy: policy, location: try Sandboxed.location(), loop: loop)
}

/// The threads this process has now.
private func threadCount() -> Int {
    guard let status = try? OS.readFile("/proc/self/status", limit: 1 << 16),
          let line = String(decoding: status, as: UTF8.self).split(separator: "\n").first(where: { $0.hasPrefix("Threads:") })
    else { return -1 }
    return Int(line.dropFirst("Threads:".count).filter { !$0.isWhitespace }) ?? -1
}

@Suite("Async sessions") struct AsyncSessionTests {
    @Test("an execution is an async sequence: output in order, one result, then done; state persists")
    func eventsInOrder() async throws {
        let session = try await open()
        let first = await collect(try session.submit("x = 41\nprint('before')\nx + 1"))
        #expect(first.stdout == "before\n" && first.results == ["42"] && first.finishedOK, "\(first)")
        if let printed = first.events.firstIndex(of: .stream(.stdout, "before\n")),
           let result = first.events.firstIndex(where: { if case .result = $0 { true } else { false } }) {
            #expect(printed < result, "the output came after the result: \(first.events)")
        }
        let second = await collect(try session.submit("x * 2"))
        #expect(second.results == ["82"], "the namespace did not persist: \(second)")
        await session.close()
        #expect(!session.isAlive)
    }

    @Test("a second execution while one runs is refused as busy, and the session goes on")
    func busy() async throws {
        let session = try await open()
        // Long enough to outlast a loaded machine's scheduling; interrupted once the checks are made.
        let running = try session.submit("import time\ntime.sleep(60)\n'slept'")
        #expect(throws: SessionBusy.self) { _ = try session.submit("1") }
        #expect(session.completeness(of: "1") == nil, "a completeness question ran beside an execution")
        let refused = await Task.detached { session.execute("1") }.value
        #expect(refused == .busy)
        #expect(ExitStatus(refused, policy: session.policy).reason?.contains("another execution is running") == true)
        session.interrupt()
        let slept = await collect(running)
        guard case .finished(.interrupted, nil, _, "KeyboardInterrupt")? = slept.outcome else {
            Issue.record("the running execution did not end interrupted: \(slept)")
            return
        }
        let after = await collect(try session.submit("2 + 2"))
        #expect(after.results == ["4"], "\(after)")
        await session.close()
    }

    @Test("input() in every execution, answered from the task that reads the events")
    func input() async throws {
        var policy = Sandboxed.policy()
        policy.capabilities.input = CapabilityGrant()
        let session = try await open(policy)
        for round in 1...3 {
            let execution = try session.submit("name = input('who? ')\nprint('hello', name)")
            let collected = await collect(execution) { event in
                if case .inputRequest(let prompt, false) = event, prompt == "who? " { session.answerInput("round \(round)") }
            }
            #expect(collected.stdout == "hello round \(round)\n" && collected.finishedOK, "round \(round): \(collected)")
        }
        // An answer when nobody asked goes nowhere: the next input() waits for its own.
        session.answerInput("stray")
        let last = await collect(try session.submit("print(input() + '!')")) { event in
            if case .inputRequest = event { session.answerInput("mine") }
        }
        #expect(last.stdout == "mine!\n", "\(last)")
        await session.close()
    }

    @Test("interrupt from another task: KeyboardInterrupt, finally runs, state stays")
    func interrupt() async throws {
        let session = try await open()
        _ = await collect(try session.submit("kept = 'yes'"))
        let execution = try session.submit("try:\n    print('spinning', flush=True)\n    while True: pass\nfinally:\n    print('cleaned up')")
        let collected = await collect(execution) { event in
            if case .stream(.stdout, let text) = event, text.contains("spinning") { session.interrupt() }
        }
        #expect(collected.stdout == "spinning\ncleaned up\n", "\(collected)")
        guard case .finished(.interrupted, nil, _, "KeyboardInterrupt")? = collected.outcome else {
            Issue.record("expected an interrupted finish, got \(String(describing: collected.outcome))")
            return
        }
        #expect(await collect(try session.submit("kept")).results == ["'yes'"])
        await session.close()
    }

    @Test("many sessions at once on the loops' few threads; none left behind")
    func manySessions() async throws {
        let count = ProcessInfoCount.sessions
        let threadsBefore = threadCount()
        let sessions = try await withThrowingTaskGroup(of: Session.self) { group in
            for _ in 0..<count { group.addTask { try await open() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(sessions.count == count)
        let results = await withTaskGroup(of: [String].self) { group in
            for (index, session) in sessions.enumerated() {
                group.addTask { (try? await collect(session.submit("n = \(index)\nn * 10")).results) ?? [] }
            }
            return await group.reduce(into: []) { $0.append(contentsOf: $1) }
        }
        #expect(Set(results) == Set((0..<count).map { String($0 * 10) }), "\(results)")
        // A thread per session would show here; the loops, the call executor and Swift's pool do not grow with the count.
        let threadsDuring = threadCount()
        #expect(threadsDuring - threadsBefore < count / 2, "\(threadsDuring - threadsBefore) more threads for \(count) sessions")
        for session in sessions { await session.close() }
        #expect(sessions.allSatisfy { !$0.isAlive })
        // Every sandbox's launcher was reaped: no zombies.
        let left = sessions.map(\.pid).filter(processExists)
        #expect(left.isEmpty, "launchers not reaped: \(left)")
    }

    @Test("a session flooding output does not hold up another on the same loop")
    func floodDoesNotStarveNeighbour() async throws {
        let loop = EventLoop.next()
        let flooding = try await open(Sandboxed.policy { $0.maxOutputBytes = 1 << 40; $0.timeoutSeconds = 30 }, loop: loop)
        let quiet = try await open(loop: loop)
        #expect(flooding.loop === quiet.loop)
        let floodEnded = Atomic<Bool>(false)
        let received = Atomic<Int>(0)
        // Raw writes to fd 1: the worker's side costs next to nothing, the supervisor's reading is the bottleneck.
        let flood = try flooding.submit("import os\nchunk = b'x' * 65536\nwhile True: os.write(1, chunk)")
        let reader = Task {
            for await item in flood {
                if case .event(.stream(_, let text)) = item { received.add(text.utf8.count, ordering: .relaxed) }
                if case .event(.streamData(_, let data)) = item { received.add(data.count, ordering: .relaxed) }
                if case .done = item { floodEnded.store(true, ordering: .releasing) }
            }
            return received.load(ordering: .relaxed)
        }
        // Wait until the flood is flowing (a megabyte through), then run the neighbour's executions beside it.
        while !floodEnded.load(ordering: .acquiring), received.load(ordering: .relaxed) < 1 << 20 {
            try await Task.sleep(for: .milliseconds(10))
        }
        var finished = 0
        for round in 0..<50 where await collect(try quiet.submit("\(round) + 1")).results == [String(round + 1)] {
            finished += 1
        }
        let floodStillRunning = !floodEnded.load(ordering: .acquiring)
        flooding.interrupt()
        let flooded = await reader.value
        #expect(finished == 50)
        #expect(floodStillRunning, "the flood ended before its neighbour's 50 executions did")
        #expect(flooded > 1 << 20, "the flood delivered only \(flooded) bytes")
        await flooding.close()
        await quiet.close()
    }

    @Test("a reader that lags holds the code back instead of piling up its output")
    func backpressure() async throws {
        let session = try await open(Sandboxed.policy { $0.maxOutputBytes = 1 << 30 })
        // 32 MiB through fd 1, far more than the few megabytes the session keeps for a reader.
        let execution = try session.submit("import os\nchunk = b'x' * 65536\nfor _ in range(512): os.write(1, chunk)\n'all written'")
        // Nothing is taken for a while: without the hold the code would finish meanwhile.
        try await Task.sleep(for: .milliseconds(500))
        session.interrupt()
        let collected = await collect(execution)
        let bytes = collected.events.reduce(0) { total, event in
            if case .streamData(.stdout, let data) = event { total + data.count } else { total }
        }
        guard case .finished(.interrupted, nil, _, "KeyboardInterrupt")? = collected.outcome else {
            Issue.record("the code was not held back: it finished (\(bytes) bytes) before the reader read on: \(String(describing: collected.outcome))")
            await session.close()
            return
        }
        #expect(bytes < 32 << 20 && collected.results.isEmpty)
        #expect(await collect(try session.submit("6 * 7")).results == ["42"])
        await session.close()
    }

    @Test("10 MB to stderr, through print and through fd 2, then 500 executions that do not stall")
    func bigStderrThenManyExecutions() async throws {
        let session = try await open(Sandboxed.policy { $0.maxOutputBytes = 64 << 20 })
        let flood = await collect(try session.submit("import os, sys\nsys.stderr.write('e' * (5 << 20))\nsys.stderr.flush()\n"
                                                     + "os.write(2, b'f' * (5 << 20))\n'written'"))
        var stderr = 0
        for event in flood.events {
            if case .stream(.stderr, let text) = event { stderr += text.utf8.count }
            if case .streamData(.stderr, let data) = event { stderr += data.count }
        }
        #expect(stderr == 10 << 20 && flood.results == ["'written'"], "stderr \(stderr) bytes, \(String(describing: flood.outcome))")
        var finished = 0
        for round in 0..<500 {
            let collected = await collect(try session.submit("n = \(round)"))
            if collected.finishedOK { finished += 1 } else { Issue.record("execution \(round): \(collected)"); break }
        }
        #expect(finished == 500)
        #expect(await collect(try session.submit("n, len(In)")).results == ["(499, 503)"])
        await session.close()
    }

    @Test("a call held for approval becomes an approval_request event; the reader decides it")
    func approvals() async throws {
        var policy = Policy(level: .restricted) // capsule.ask() needs restricted
        policy.capabilities.display?.ask = true
        policy.capabilities.input = CapabilityGrant()
        let session = try await open(policy)
        var requests: [ApprovalRequest] = []
        let approved = await collect(try session.submit("display({'text/plain': 'shown'}, raw=True)\nprint('after')")) { event in
            if case .approvalRequest(let id, let request) = event {
                requests.append(request)
                #expect(session.answerApproval(id, .approved))
                #expect(!session.answerApproval(id, .approved), "a request was decided twice")
            }
        }
        #expect(requests.map(\.capability) == ["display"], "\(requests)")
        #expect(approved.events.contains(.display(["text/plain": "shown"])) && approved.stdout == "after\n", "\(approved)")

        let denied = await collect(try session.submit("""
            try:
                display({'text/plain': 'hidden'}, raw=True)
            except Exception as e:
                print(type(e).__name__, e)
            """)) { event in
            if case .approvalRequest(let id, _) = event { session.answerApproval(id, .denied("not today")) }
        }
        #expect(denied.stdout == "CapabilityDenied display.show was not approved: not today\n", "\(denied)")

        // capsule.ask() asks the same way.
        let asked = await collect(try session.submit("import capsule\nprint(capsule.ask('proceed?'))")) { event in
            if case .approvalRequest(let id, let request) = event {
                #expect(request.summary == ["question": "proceed?"])
                session.answerApproval(id, .approved)
            }
        }
        #expect(asked.stdout == "True\n", "\(asked)")

        // A blocking handler that does not decide has not approved.
        let undecided = await Task.detached {
            var text = ""
            _ = session.execute("import capsule\nprint(capsule.ask('really?'))", wantResult: false) { event in
                if case .stream(.stdout, let chunk) = event { text += chunk }
                return nil
            }
            return text
        }.value
        #expect(undecided == "False\n", "\(undecided)")
        await session.close()
    }

    @Test("streamed code: each statement runs once whole, while the rest is still arriving")
    func streamRunsStatementsAsTheyArrive() async throws {
        let session = try await open()
        let (chunks, feed) = AsyncStream<String>.makeStream()
        for piece in ["pri", "nt('first'", ")\nx = ", "4"] { feed.yield(piece) }
        feed.yield("1\n")
        let execution = try session.submit(streaming: chunks)
        // The rest is sent only once the first statement's output is seen: code that ran only at
        // the end would never get it (the watchdog then ends the stream, and the order is wrong).
        let watchdog = Task {
            try await Task.sleep(for: .seconds(20))
            feed.finish()
        }
        var order: [String] = []
        let collected = await collect(execution) { event in
            guard case .stream(.stdout, let text) = event else { return }
            order.append(text)
            if text == "first\n" {
                order.append("(more code sent)")
                for piece in ["def f(n):\n", "    total = n\n", "\n", "    return total * 2\n", "\n",
                              "for i in range(2):\n", "    print(i)\n", "print(f(x))\n", "x"] { feed.yield(piece) }
                feed.finish()
            }
        }
        watchdog.cancel()
        #expect(order == ["first\n", "(more code sent)", "0\n", "1\n", "82\n"], "\(order)")
        #expect(collected.results == ["41"] && collected.finishedOK, "\(collected)")
        await session.close()
    }

    @Test("streamed code stops at the first statement that fails, with its line in the whole code")
    func streamStopsAtTheFailure() async throws {
        let session = try await open()
        let syntax = await collect(try session.submit(streaming: AsyncStream { feed in
            for piece in ["a = 1\n", "b = )\n", "print('never')\n"] { feed.yield(piece) }
            feed.finish()
        }))
        guard case .error(let ename, _, let traceback)? = syntax.events.first(where: { if case .error = $0 { true } else { false } }) else {
            Issue.record("no error: \(syntax)")
            return
        }
        #expect(ename == "SyntaxError" && traceback.joined().contains("line 2"), "\(traceback)")
        #expect(syntax.stdout.isEmpty && syntax.outcome.map { if case .finished(.error, nil, _, "SyntaxError") = $0 { true } else { false } } == true,
                "\(syntax)")
        let runtime = await collect(try session.submit(streaming: AsyncStream { feed in
            feed.yield("print(a)\n\nprint(1 / 0)\nprint('never')\n")
            feed.finish()
        }))
        #expect(runtime.stdout == "1\n", "\(runtime)")
        let lines = runtime.events.compactMap { if case .error(_, _, let traceback) = $0 { traceback.joined() } else { nil } }
        #expect(lines.first?.contains("line 3") == true, "\(lines)")
        #expect(await collect(try session.submit("a")).results == ["1"])
        await session.close()
    }

    @Test("output from a background thread between executions goes to the next one, and harms nothing")
    func outputBetweenExecutions() async throws {
        let session = try await open()
        _ = await collect(try session.submit("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()"))
        try await Task.sleep(for: .milliseconds(600)) // it prints while no execution runs
        let next = await collect(try session.submit("6 * 7"))
        #expect(next.results == ["42"] && next.finishedOK && next.stdout == "late\n", "\(next)")
        #expect(session.isAlive)
        await session.close()
    }

    @Test("asyncio tasks an execution leaves keep running between executions, on the one loop")
    func tasksRunBetweenExecutions() async throws {
        let session = try await open()
        let started = await collect(try session.submit("""
            import asyncio
            ticks = []
            async def ticker():
                for i in range(5):
                    ticks.append(i)
                    print('tick', i, flush=True)
                    await asyncio.sleep(0.02)
                return 'finished'
            task = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            """))
        #expect(started.finishedOK, "\(started)")
        try await Task.sleep(for: .milliseconds(500)) // no execution runs meanwhile
        let later = await collect(try session.submit("ticks, task.done(), task.result()"))
        #expect(later.results == ["([0, 1, 2, 3, 4], True, 'finished')"], "\(later)")
        // What the task printed while idle is delivered with the next execution.
        #expect((started.stdout + later.stdout).contains("tick 4\n"), "\(started.stdout + later.stdout)")
        // A blocking capability call from async code works (it holds the loop while it waits).
        let shown = await collect(try session.submit("async def show():\n    await asyncio.sleep(0)\n"
                                                     + "    display({'text/plain': 'from a coroutine'}, raw=True)\nawait show()"))
        #expect(shown.events.contains(.display(["text/plain": "from a coroutine"])), "\(shown)")
        // An interrupt while idle is dropped, as before: the next execution runs.
        _ = await collect(try session.submit("asyncio.create_task(asyncio.sleep(5)) and None"))
        session.interrupt()
        try await Task.sleep(for: .milliseconds(100))
        #expect(await collect(try session.submit("1 + 1")).results == ["2"])
        await session.close()
    }

    @Test("the blocking API refuses to run on an event loop's thread")
    func blockingOnTheLoopIsRefusedByDesign() async throws {
        // Not run on the loop (it would stop the process): the check is that the loop says which
        // thread is its own.
        let loop = EventLoop.next()
        let onLoop = await Task(executorPreference: loop) { loop.isCurrent && EventLoop.onAnyLoop }.value
        #expect(onLoop)
        #expect(!loop.isCurrent && !EventLoop.onAnyLoop)
    }
}

/// How many sessions the many-sessions test opens: fewer in CI (the benchmark runs 200).
private enum ProcessInfoCount {
    static let sessions = OS.environment("CAPSULE_TEST_SESSIONS").flatMap { Int($0) } ?? 32
}

/// Whether a process `pid` exists (a zombie not yet reaped does).
private func processExists(_ pid: Int32) -> Bool {
    Glibc.kill(pid, 0) == 0
}
