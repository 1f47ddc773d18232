#if canImport(Glibc)
import Glibc
#endif
import CCapsuleSys
import Synchronization

/// One thread of capsule's own that runs tasks and waits on file descriptors: what lets hundreds of
/// sessions share a few threads. A task that prefers this executor (`Task(executorPreference:)`)
/// runs here; when it has nothing to read it suspends in `wait(for:events:until:)` and the thread
/// goes on with other tasks, or sleeps in epoll_wait until a descriptor is ready, a deadline
/// passes, or a job is enqueued. Jobs run in the order they were enqueued, so a task that yields
/// (`Task.yield()`) after a big read lets every other ready task run before it goes on.
///
/// Not Swift's shared pool: a program embedding sessions may block those threads (a synchronous
/// call waits for its answer), and nothing here may depend on them.
public final class EventLoop: TaskExecutor, @unchecked Sendable {
    /// A few loops for the whole process, one a core up to four, each started when `next()`
    /// first hands it out (a program with one session, such as `capsule run`, starts one thread).
    private static let group = Mutex<[EventLoop?]>(Array(repeating: nil, count: max(1, min(4, OS.coreCount()))))
    private static let turn = Atomic<Int>(0)

    /// The loop for a new session: the group's loops in turn.
    public static func next() -> EventLoop {
        let index = turn.add(1, ordering: .relaxed).oldValue
        return group.withLock { loops in
            let slot = index % loops.count
            if let loop = loops[slot] { return loop }
            let loop = EventLoop()
            loops[slot] = loop
            return loop
        }
    }

    private var mutex = pthread_mutex_t()
    private var jobs: [UnownedJob] = []
    private var sleeping = false
    private let epoll: Int32
    /// Written to wake the thread from epoll_wait when a job arrives while it sleeps.
    private let wake: Int32
    /// The loop thread's id, to tell a caller on it (who must not block) from one elsewhere.
    private let thread = Atomic<UInt>(0)

    /// The tasks suspended in `wait`, by descriptor (one waiter a descriptor), touched only on
    /// the loop thread.
    private var waiters: [Int32: Waiter] = [:]
    /// Descriptors added to the epoll set (re-armed with a modify; a oneshot event disarms them).
    private var watched: Set<Int32> = []

    private struct Waiter {
        let deadline: UInt64
        let continuation: UnsafeContinuation<Bool, Never>
    }

    private init() {
        pthread_mutex_init(&mutex, nil)
        epoll = capsule_epoll_create()
        wake = capsule_eventfd()
        precondition(epoll >= 0 && wake >= 0, "no epoll instance or eventfd: \(OS.errorText(errno))")
        _ = capsule_epoll_watch(epoll, wake, UInt32(CAPSULE_EPOLL_IN), 0, UInt64(UInt32(bitPattern: wake)))
        let started = OS.startThread { self.run() }
        precondition(started, "no thread for the event loop")
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(&mutex)
        jobs.append(job)
        let wakeUp = sleeping
        sleeping = false
        pthread_mutex_unlock(&mutex)
        // The loop's own thread (resuming a waiter, or a task making one) takes it on its next
        // turn: no wake-up needed.
        if wakeUp, !isCurrent { OS.signal(wake) }
    }

    /// Whether the caller runs on this loop's thread.
    public var isCurrent: Bool { thread.load(ordering: .acquiring) == UInt(pthread_self()) }

    /// Whether the caller runs on any loop's thread (where blocking would stall every task on it).
    public static var onAnyLoop: Bool { group.withLock { loops in loops.contains { $0?.isCurrent == true } } }

    public enum Readiness: Sendable { case readable, writable }

    /// Suspends the calling task, which must run on this loop, until `fd` is `readiness` or
    /// `deadline` (monotonic nanoseconds) passes; true when it is ready. One task waits on a
    /// descriptor at a time.
    public func wait(for fd: Int32, _ readiness: Readiness = .readable, until deadline: UInt64) async -> Bool {
        precondition(isCurrent, "EventLoop.wait called off its loop")
        let events = UInt32(readiness == .readable ? CAPSULE_EPOLL_IN : CAPSULE_EPOLL_OUT) | UInt32(CAPSULE_EPOLL_ONESHOT)
        let token = UInt64(UInt32(bitPattern: fd))
        // A descriptor once watched is re-armed; one closed since (and its number reused) is added again.
        if !watched.contains(fd) || capsule_epoll_watch(epoll, fd, events, 1, token) != 0 {
            guard capsule_epoll_watch(epoll, fd, events, 0, token) == 0 else {
                return true // not pollable: the caller's read or write says what it is
            }
            watched.insert(fd)
        }
        return await withUnsafeContinuation { continuation in
            waiters[fd] = Waiter(deadline: deadline, continuation: continuation)
        }
    }

    private func run() -> Never {
        thread.store(UInt(pthread_self()), ordering: .releasing)
        capsule_name_thread("capsule-loop") // else it has the name of the thread that made it
        var tokens = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        var batch: [UnownedJob] = []
        var unlooked = 0 // batches run since the descriptors were last looked at
        while true {
            pthread_mutex_lock(&mutex)
            swap(&batch, &jobs)
            sleeping = false
            pthread_mutex_unlock(&mutex)
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)

            // With jobs enqueued meanwhile, run them, looking at the descriptors every few
            // batches (a job that resumes another, as a session's `.done` its reader, is the usual
            // case: no system call between them); else sleep until a job comes (`enqueue` wakes
            // the thread) or the nearest deadline.
            pthread_mutex_lock(&mutex)
            let idle = jobs.isEmpty
            sleeping = idle
            pthread_mutex_unlock(&mutex)
            unlooked += 1
            if !idle, unlooked < 8 { continue }
            unlooked = 0
            var timeout: Int32 = 0
            if idle, let nearest = waiters.values.lazy.map(\.deadline).min() {
                timeout = OS.pollMilliseconds(until: nearest)
            } else if idle {
                timeout = -1
            }
            let count = capsule_epoll_wait(epoll, &tokens, &events, 64, timeout)
            for index in 0..<max(0, Int(count)) {
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: tokens[index]))
                if fd == wake {
                    OS.drain(wake)
                } else {
                    waiters.removeValue(forKey: fd)?.continuation.resume(returning: true)
                }
            }
            guard !waiters.isEmpty else { continue }
            let now = OS.now()
            for (fd, waiter) in waiters where waiter.deadline <= now {
                waiters.removeValue(forKey: fd)
                waiter.continuation.resume(returning: false)
            }
        }
    }
}

extension OS {
    /// A new epoll set (close-on-exec): a descriptor that is readable while one it watches is.
    public static func descriptorSet() throws(SystemError) -> Int32 {
        try retrying("epoll_create1") { capsule_epoll_create() }
    }

    /// Adds `fd` to the epoll set `set`, watched for reading.
    public static func watch(_ fd: Int32, in set: Int32) {
        _ = capsule_epoll_watch(set, fd, UInt32(CAPSULE_EPOLL_IN), 0, UInt64(UInt32(bitPattern: fd)))
    }

    public static func unwatch(_ fd: Int32, in set: Int32) {
        _ = capsule_epoll_forget(set, fd)
    }

    /// A non-blocking eventfd (close-on-exec): `signal` makes it readable, `drain` clears it.
    public static func eventDescriptor() throws(SystemError) -> Int32 {
        try retrying("eventfd") { capsule_eventfd() }
    }

    public static func signal(_ eventDescriptor: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(eventDescriptor, &one, 8)
    }

    public static func drain(_ eventDescriptor: Int32) {
        var value: UInt64 = 0
        _ = Glibc.read(eventDescriptor, &value, 8)
    }

    /// The CPUs this process may run on.
    public static func coreCount() -> Int {
        Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}
