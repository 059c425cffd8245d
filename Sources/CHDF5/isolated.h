// Reading HDF5 datasets in a child process, so that libhdf5 crashing on a damaged file costs a
// diagnostic instead of the process (swiftjit, or a Python or C host embedding SwiftJIT).
//
// libhdf5 1.10.8 trusts offsets and lengths in a file's metadata (local heaps, B-trees, object
// headers) and dereferences NULL or reads out of bounds on damaged files (Tests/Fuzz/libhdf5-crashes).
// Validating that metadata would mean re-parsing the format ourselves, so the reads run in a
// fork()ed child that only calls libhdf5 and plain C, writes what it read to a pipe and _exit()s.
//
// Why fork() and not posix_spawn of a helper: the library is also embedded (C API, Python) where
// the executable is not ours and no helper binary can be found reliably; fork() needs nothing on
// disk and hands the child an in-memory image without copying it. What makes it safe with our
// threads and LLVM: the child runs only the code below (libhdf5, malloc, write; never the Swift
// runtime, whose locks another thread may hold at fork time), glibc's and the sanitizers' malloc
// reset their locks across fork, and the caller holds the one lock every libhdf5 call of the
// process takes (HDF5File's), so no other thread is inside libhdf5 (whose threadsafe build has a
// global mutex) when the child is made.
//
// The pipe protocol, all native-endian (parent and child are the same binary):
//   int32 open status (0 opened, -1 not HDF5 / truncated)
//   then per dataset, once it is done: swiftjit_h5_dataset_report, then, when `read` is 0,
//   `values` float32s. The child stops after the first dataset it does not read whole.
#ifndef SWIFTJIT_CHDF5_ISOLATED_H
#define SWIFTJIT_CHDF5_ISOLATED_H
#include "shim.h"
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern int pipe2(int fds[2], int flags);

/// What the child learned about one dataset. `found`: 1 a dataset, 0 absent, -1 lookup failed,
/// -2 it could not be described. `read`: 0 read (its values follow), 1 not attempted (not
/// numeric, a scalar, or past `max_values`), -1 H5Dread or the storage check failed, -2 out of memory.
typedef struct {
    int32_t found;
    int32_t rank;
    int32_t klass;
    int32_t read;
    int64_t values;
    int64_t dims[SWIFTJIT_H5_MAX_RANK];
} swiftjit_h5_dataset_report;

static inline int swiftjit_h5_write_all(int fd, const void *bytes, size_t count) {
    const char *cursor = (const char *)bytes;
    while (count > 0) {
        ssize_t n = write(fd, cursor, count > (1u << 20) ? (1u << 20) : count);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        cursor += n;
        count -= (size_t)n;
    }
    return 0;
}

/// Reads exactly `count` bytes; 0 on success, -1 when the pipe ends first (the child died), -2
/// when nothing arrived for `stall_ms` milliseconds (libhdf5 hangs in the child, or the file is
/// on storage that stopped answering; negative: wait for ever).
static inline int swiftjit_h5_read_all_within(int fd, void *bytes, size_t count, int stall_ms) {
    char *cursor = (char *)bytes;
    while (count > 0) {
        if (stall_ms >= 0) {
            struct pollfd ready = { .fd = fd, .events = POLLIN };
            int polled = poll(&ready, 1, stall_ms);
            if (polled < 0 && errno == EINTR) continue;
            if (polled == 0) return -2;
        }
        ssize_t n = read(fd, cursor, count > (1u << 20) ? (1u << 20) : count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        cursor += n;
        count -= (size_t)n;
    }
    return 0;
}

/// Reads exactly `count` bytes; 0 on success, -1 when the pipe ends first (the child died).
static inline int swiftjit_h5_read_all(int fd, void *bytes, size_t count) {
    return swiftjit_h5_read_all_within(fd, bytes, count, -1);
}

/// Looks dataset `name` up and describes it into `report`: `read` is 0 when it is to be read
/// (a numeric dataset of at least one axis and at most `max_values` values, `values` of them),
/// 1 when it is not. Used by the child and by the in-process reading of a file the child has
/// already read whole.
static inline void swiftjit_h5_report(hid_t file, const char *name, unsigned long long max_values,
                                      swiftjit_h5_dataset_report *report) {
    memset(report, 0, sizeof *report);
    report->read = 1;
    report->found = swiftjit_h5_has_dataset(file, name);
    if (report->found != 1) return;
    int rank = 0, klass = 0;
    long long dims[SWIFTJIT_H5_MAX_RANK];
    if (swiftjit_h5_describe(file, name, &rank, dims, &klass) != 0) {
        report->found = -2;
        return;
    }
    report->rank = rank;
    report->klass = klass;
    unsigned long long count = 1;
    int fits = rank > 0 && klass != SWIFTJIT_H5_OTHER;
    for (int axis = 0; axis < rank; axis++) {
        report->dims[axis] = dims[axis];
        if (dims[axis] < 0 || __builtin_mul_overflow(count, (unsigned long long)dims[axis], &count)) fits = 0;
    }
    if (fits && count <= max_values) {
        report->values = (int64_t)count;
        report->read = 0;
    }
}

/// The child: open, then per dataset look up, describe, read, report. Never returns.
static inline void swiftjit_h5_child(const char *path, const void *image, size_t image_count,
                                     const char *const *names, int name_count,
                                     unsigned long long max_values, int fd) {
    // A crash must end the child quietly with its signal (the parent names it): no handler
    // inherited from the parent (Swift's backtracer, a host's), no core file, no SIGPIPE death
    // when the parent stops reading early.
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) sigaction(fatal[i], &action, NULL);
    action.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &action, NULL);

    hid_t file = image ? swiftjit_h5_open_image(image, image_count) : swiftjit_h5_open_read(path);
    int32_t opened = file >= 0 ? 0 : -1;
    if (swiftjit_h5_write_all(fd, &opened, sizeof opened) != 0 || file < 0) _exit(0);
    for (int index = 0; index < name_count; index++) {
        swiftjit_h5_dataset_report report;
        swiftjit_h5_report(file, names[index], max_values, &report);
        float *values = NULL;
        if (report.read == 0 && report.values > 0) {
            values = (float *)malloc((size_t)report.values * sizeof(float));
            report.read = values == NULL ? -2 : (swiftjit_h5_read_float(file, names[index], values) == 0 ? 0 : -1);
        }
        if (swiftjit_h5_write_all(fd, &report, sizeof report) != 0) _exit(0);
        if (report.read != 0) _exit(0);
        if (values != NULL && swiftjit_h5_write_all(fd, values, (size_t)report.values * sizeof(float)) != 0) _exit(0);
        free(values);
    }
    // Not closed: the parent has everything, and a damaged file's close may itself fail.
    _exit(0);
}

/// Forks a child that reads `names` from the file at `path` (or, when `image` is not NULL, from
/// the `image_count` bytes there) and writes them to a pipe; returns the child's pid and the
/// pipe's read end in `*read_end`, or -1 (errno set) when no pipe or process could be made.
/// The caller must hold the process's libhdf5 lock, read the pipe, close it and call
/// swiftjit_h5_reap.
static inline pid_t swiftjit_h5_spawn_reader(const char *path, const void *image, size_t image_count,
                                             const char *const *names, int name_count,
                                             unsigned long long max_values, int *read_end) {
    int fds[2];
    // Close-on-exec: a process another thread spawns must not keep the write end open.
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    pid_t child = fork();
    if (child < 0) {
        int saved = errno;
        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return -1;
    }
    if (child == 0) {
        close(fds[0]);
        swiftjit_h5_child(path, image, image_count, names, name_count, max_values, fds[1]);
    }
    close(fds[1]);
    *read_end = fds[0];
    return child;
}

/// Waits for the child (killing it first when `kill_first`); returns its signal number when a
/// signal ended it, else 0, with its exit status in `*status` (-1 when it could not be waited
/// for, e.g. a host that set SIGCHLD to SIG_IGN).
static inline int swiftjit_h5_reap(pid_t child, int kill_first, int *status) {
    if (kill_first) kill(child, SIGKILL);
    int raw = 0;
    pid_t waited;
    do { waited = waitpid(child, &raw, 0); } while (waited < 0 && errno == EINTR);
    *status = -1;
    if (waited != child) return 0;
    if (WIFSIGNALED(raw)) return WTERMSIG(raw);
    if (WIFEXITED(raw)) *status = WEXITSTATUS(raw);
    return 0;
}
/// The libhdf5 objects of any kind open in this process (all files), or -1.
static inline long long swiftjit_h5_open_objects(void) {
    return (long long)H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
}
#endif
