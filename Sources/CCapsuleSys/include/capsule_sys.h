// System calls Swift cannot reach through Glibc (variadic `syscall`, no libc wrapper).
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
