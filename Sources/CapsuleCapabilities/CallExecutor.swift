#if canImport(Glibc)
import Glibc
#endif
import CapsuleOS

/// Threads of capsule's own that run the broker's tasks. Swift's shared pool has one thread a
/// core, and a program embedding sessions may well block those threads (a synchronous session
/// waits in poll): capability calls must not depend on them, or a blocked pool would hold every
/// call until the session's timeout.
package final class CallExecutor: TaskExecutor, @unchecked Sendable {
    package static let shared = CallExecutor(threads: 4)

    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var jobs: [UnownedJob] = []
    private var head = 0

    init(threads: Int) {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
        for _ in 0..<threads { _ = OS.startThread { self.work() } }
    }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(&mutex)
        jobs.append(job)
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    private func work() -> Never {
        while true {
            pthread_mutex_lock(&mutex)
            while head == jobs.count { pthread_cond_wait(&condition, &mutex) }
            let job = jobs[head]
            head += 1
            if head > 1024 && head * 2 > jobs.count { // drop the run part of the queue now and then
                jobs.removeFirst(head)
                head = 0
            }
            pthread_mutex_unlock(&mutex)
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
