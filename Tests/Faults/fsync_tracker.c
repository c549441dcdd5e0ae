// LD_PRELOAD shim for the simulated power loss (Tests/Faults): after every successful fsync or
// fdatasync of an append-only file (*.aof), appends "<path> <size>\n" to $FSYNC_TRACKER_LOG, where
// size is the file's length *before* the call: what a power loss cannot take away. The fault test
// SIGKILLs the server and cuts each AOF back to its last recorded size (0 if never synced), which is
// what a real OS crash keeps (unsynced page-cache writes are lost; sync_file_range is not durable).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void record(int fd, off_t size) {
    const char *log = getenv("FSYNC_TRACKER_LOG");
    if (!log || size < 0) return;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 4) return;
    path[n] = 0;
    if (strcmp(path + n - 4, ".aof") != 0) return;
    char line[4200];
    int len = snprintf(line, sizeof line, "%s %lld\n", path, (long long)size);
    int out = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (out < 0) return;
    if (write(out, line, (size_t)len) < 0) { /* nothing to do */ }
    close(out);
}

static off_t length(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_size : -1;
}

// The length before the call, the real call, then the record if it succeeded.
static int tracked(int (*real)(int), int fd) {
    off_t size = length(fd);
    int rc = real(fd);
    if (rc == 0) record(fd, size);
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return tracked(real, fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return tracked(real, fd);
}
