#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS

/// Runs blocking work (file system calls) on a thread of its own, so a slow disk never holds one
/// of the few threads Swift's concurrency runs every session's tasks on.
package enum Blocking {
    package static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            BlockingThreads.shared.submit { continuation.resume(returning: work()) }
        }
    }
}

/// The threads `Blocking` runs work on. Starting a thread per call cost more than a file call
/// itself, so threads are kept: an idle one takes the next job, a new one starts only when none
/// is idle (so each job still has a thread to itself), and one idle for `idleSeconds` ends.
private final class BlockingThreads: @unchecked Sendable {
    static let shared = BlockingThreads()
    private static let idleSeconds = 10

    private final class Job {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var jobs: [Job] = []
    /// Threads waiting for a job.
    private var waiting = 0

    private init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    func submit(_ body: @escaping () -> Void) {
        let job = Job(body)
        pthread_mutex_lock(&mutex)
        jobs.append(job)
        let start = jobs.count > waiting
        if !start { pthread_cond_signal(&condition) }
        pthread_mutex_unlock(&mutex)
        guard start, !OS.startThread({ self.work() }) else { return }
        // No thread to be had: do it here, unless a thread took it meanwhile.
        pthread_mutex_lock(&mutex)
        let index = jobs.firstIndex { $0 === job }
        if let index { jobs.remove(at: index) }
        pthread_mutex_unlock(&mutex)
        if index != nil { body() }
    }

    private func work() {
        pthread_mutex_lock(&mutex)
        while true {
            while jobs.isEmpty {
                var until = timespec()
                clock_gettime(CLOCK_REALTIME, &until)
                until.tv_sec += Self.idleSeconds
                waiting += 1
                let waited = pthread_cond_timedwait(&condition, &mutex, &until)
                waiting -= 1
                if waited == ETIMEDOUT && jobs.isEmpty {
                    pthread_mutex_unlock(&mutex)
                    return
                }
            }
            let job = jobs.removeFirst()
            pthread_mutex_unlock(&mutex)
            job.body()
            pthread_mutex_lock(&mutex)
        }
    }
}
