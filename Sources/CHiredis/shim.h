#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <hiredis/hiredis.h>

/// Names the calling thread (visible in /proc, gdb and profilers); at most 15 characters.
static inline void chiredis_set_current_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}
#endif
