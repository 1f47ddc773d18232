// System calls Swift cannot reach through Glibc (variadic `syscall`, no libc wrapper), and the
// one CPU instruction set capsule uses (SHA-256 for the audit chain).
#pragma once
#include <stdint.h>

/// openat2(2) with RESOLVE_* flags; -1 with errno set (ENOSYS where the kernel lacks it).
int capsule_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve);

enum {
    CAPSULE_RESOLVE_NO_XDEV = 0x01,
    CAPSULE_RESOLVE_NO_MAGICLINKS = 0x02,
    CAPSULE_RESOLVE_NO_SYMLINKS = 0x04,
    CAPSULE_RESOLVE_BENEATH = 0x08,
};

#include <stddef.h>

/// SHA-256's 64 round constants.
const uint32_t *capsule_sha256_constants(void);
/// Whether this CPU has the SHA extensions (and SSSE3, SSE4.1) that capsule_sha256_blocks needs.
int capsule_sha256_accelerated(void);
/// SHA-256's compression of `blocks` 64-byte blocks into `state` (A..H), with the SHA extensions;
/// call it only where capsule_sha256_accelerated() says so.
void capsule_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);

/// epoll(7) and eventfd(2), which the Glibc module does not export. Each returns -1 with errno set.
enum {
    CAPSULE_EPOLL_IN = 0x001,
    CAPSULE_EPOLL_OUT = 0x004,
    CAPSULE_EPOLL_ONESHOT = 1u << 30,
};
/// A new epoll instance, close-on-exec.
int capsule_epoll_create(void);
/// Adds `fd` to `epfd` for `events` (or changes its events, with `modify`); `token` comes back
/// with its readiness.
int capsule_epoll_watch(int epfd, int fd, uint32_t events, int modify, uint64_t token);
int capsule_epoll_forget(int epfd, int fd);
/// Up to `max` ready tokens and their events; waits up to `timeout_ms` (forever if negative).
int capsule_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
/// A non-blocking, close-on-exec eventfd.
int capsule_eventfd(void);
/// Names the calling thread (as `ps -L` and perf show it); at most 15 characters are kept.
void capsule_name_thread(const char *name);
