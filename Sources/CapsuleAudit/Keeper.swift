#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS

/// A thread that does a log's timed work when it falls due (ends a lease, syncs a batch), so
/// that no capability call waits for it and nothing waits for a call that never comes. It runs
/// while work lies ahead and ends after a second without; `wake` starts it again.
final class Keeper: @unchecked Sendable {
    /// Does what is due at `now` (monotonic nanoseconds), or everything when `force`; returns
    /// when work next falls due. Set once, before the first `wake`.
    var work: (@Sendable (_ now: UInt64, _ force: Bool) -> UInt64?)?

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var due = UInt64.max
    private var running = false
    private static let idleNanoseconds: UInt64 = 1_000_000_000

    init() {
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    /// Makes sure the work runs by `time`.
    func wake(by time: UInt64) {
        pthread_mutex_lock(&mutex)
        guard time < due else {
            pthread_mutex_unlock(&mutex)
            return
        }
        due = time
        if running {
            pthread_cond_signal(&condition)
            pthread_mutex_unlock(&mutex)
            return
        }
        // The thread holds the keeper while it runs.
        running = OS.startThread { self.run() }
        if !running { due = .max }
        let started = running
        pthread_mutex_unlock(&mutex)
        // No thread to be had: do it all now rather than hold the file's lock for nobody.
        if !started { _ = work?(OS.now(), true) }
    }

    private func run() {
        pthread_mutex_lock(&mutex)
        while true {
            let now = OS.now()
            if now < due || due == .max {
                let wait = due == .max ? now + Self.idleNanoseconds : due
                var until = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
                if pthread_cond_timedwait(&condition, &mutex, &until) == ETIMEDOUT, due == .max {
                    running = false
                    pthread_mutex_unlock(&mutex)
                    return
                }
                continue
            }
            due = .max
            pthread_mutex_unlock(&mutex)
            let next = work?(now, false)
            pthread_mutex_lock(&mutex)
            if let next, next < due { due = next }
        }
    }
}
