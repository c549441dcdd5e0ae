#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

// glibc declares this only under _GNU_SOURCE, which would change other headers' definitions
// and clash with Swift's Glibc module; declare just this one function.
extern int pthread_setname_np(pthread_t thread, const char *name);

/// Names the calling thread (visible in /proc, gdb and profilers); at most 15 characters.
static inline void chiredis_set_current_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

/// The kernel's id of the calling thread (its /proc/self/task entry).
static inline int chiredis_current_thread_id(void) {
    return (int)syscall(SYS_gettid);
}
#endif
