#if canImport(Glibc)
import Glibc
#endif

/// Runs blocking work (file system calls) on a thread of its own, so a slow disk never holds one
/// of the few threads Swift's concurrency runs every session's tasks on.
package enum Blocking {
    package static func run<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let box = Unmanaged.passRetained(Job { continuation.resume(returning: work()) })
            var thread = pthread_t()
            var attributes = pthread_attr_t()
            pthread_attr_init(&attributes)
            pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
            let started = pthread_create(&thread, &attributes, { raw in
                let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
                job.body()
                return nil
            }, box.toOpaque())
            pthread_attr_destroy(&attributes)
            if started != 0 { box.takeRetainedValue().body() } // no thread to be had: do it here
        }
    }

    private final class Job: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
}
