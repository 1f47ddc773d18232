#include "capsule_sys.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

struct capsule_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

int capsule_openat2(int dirfd, const char *path, uint64_t flags, uint64_t mode, uint64_t resolve) {
    struct capsule_open_how how = {flags, mode, resolve};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

#include <sys/epoll.h>
#include <sys/eventfd.h>

int capsule_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int capsule_epoll_watch(int epfd, int fd, uint32_t events, int modify, uint64_t token) {
    struct epoll_event event = {.events = events, .data.u64 = token};
    return epoll_ctl(epfd, modify ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event);
}

int capsule_epoll_forget(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int capsule_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event ready[64];
    if (max > 64) max = 64;
    int count;
    do count = epoll_wait(epfd, ready, max, timeout_ms); while (count < 0 && errno == EINTR);
    for (int i = 0; i < count; i++) {
        tokens[i] = ready[i].data.u64;
        events[i] = ready[i].events;
    }
    return count;
}

int capsule_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

#include <sys/prctl.h>

void capsule_name_thread(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }
