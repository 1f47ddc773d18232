#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable, for threads of capsule's own that wait for one another
/// (no Dispatch, no Foundation).
public final class Condition: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    /// Runs `body` holding the mutex; `body` may `wait`.
    public func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }

    /// Inside `withLock`: lets go of the mutex until `signal`, then holds it again.
    public func wait() { pthread_cond_wait(&condition, &mutex) }

    /// Wakes one waiter (call it inside `withLock`).
    public func signal() { pthread_cond_signal(&condition) }
}
