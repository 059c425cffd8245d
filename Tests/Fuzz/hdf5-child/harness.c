// libFuzzer driver for the C half of HDF5ChildReader (Sources/CHDF5/isolated.h): each input is
// an HDF5 image a forked child opens and reads with libhdf5 as HDF5Data reads a file ("data",
// then "label"), sending its reports and values over a pipe; this process decodes them as the
// Swift parent does and reaps the child. libhdf5 may crash in the child (that is what the child
// is for); this process must not crash, leak, hang or run out of descriptors, and every report
// must be consistent (rank 1...32, values = the extents' product, at most the limit).
// Built and run without the Swift package (seconds, where the swiftjit-fuzz build takes tens of
// minutes); Tests/Fuzz/README.md has the command and the runs.
#include "isolated.h"

enum { MAX_VALUES = 1 << 22 };

/// Children that died of a signal (libhdf5 crashing on the input) and inputs, printed at exit.
static unsigned long long child_crashes, inputs;

static void print_counts(void) {
    fprintf(stderr, "hdf5-child: %llu inputs, %llu children ended by a signal (libhdf5 crashing; this process carried on)\n",
            inputs, child_crashes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (inputs++ == 0) atexit(print_counts);
    const char *names[] = {"data", "label"};
    int pipe = -1;
    pid_t child = swiftjit_h5_spawn_reader(NULL, size ? (const void *)data : (const void *)1, size, names, 2, MAX_VALUES, &pipe);
    if (child < 0) abort();  // out of processes or descriptors: a leak of ours
    int32_t opened = -1;
    if (swiftjit_h5_read_all(pipe, &opened, sizeof opened) == 0 && opened == 0) {
        for (int i = 0; i < 2; i++) {
            swiftjit_h5_dataset_report report;
            if (swiftjit_h5_read_all(pipe, &report, sizeof report) != 0 || report.read != 0) break;
            if (report.found != 1 || report.rank < 1 || report.rank > SWIFTJIT_H5_MAX_RANK) abort();
            unsigned long long count = 1;
            for (int axis = 0; axis < report.rank; axis++) {
                if (report.dims[axis] < 0 || __builtin_mul_overflow(count, (unsigned long long)report.dims[axis], &count)) abort();
            }
            if (count != (unsigned long long)report.values || count > MAX_VALUES) abort();
            float *values = (float *)malloc(count * sizeof(float) + 1);
            int complete = swiftjit_h5_read_all(pipe, values, count * sizeof(float)) == 0;
            free(values);
            if (!complete) break;
        }
    }
    close(pipe);
    // The child has said all it will (or died): wait for it before killing, to count crashes.
    int status = 0;
    if (swiftjit_h5_reap(child, 0, &status) != 0) child_crashes++;
    return 0;
}
