/*
 * api_test.c — checks of the C API that a C program sees: one model shared by many threads, each
 * with its own session, every result equal to a single-threaded reference; and the errors a C
 * caller gets for bad input. Built and run by Tests/c/test_c_api.py (also under ThreadSanitizer).
 *
 *   api_test NET.prototxt [THREADS] [RUNS]     exits 0 when every check holds, printing a summary
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swiftjit.h"

#define INPUT_SETS 4

static sj_model *model;
static sj_tensor input_info;
static int64_t input_count, output_count;
static float *inputs[INPUT_SETS];
static float *expected[INPUT_SETS];
static int runs_per_thread = 100;
static int failures;
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, sj_status *status) {
    fprintf(stderr, "FAIL: %s: %s\n", what, status ? sj_status_message(status) : "(no status)");
    sj_status_free(status);
    pthread_mutex_lock(&failures_lock);
    failures++;
    pthread_mutex_unlock(&failures_lock);
}

static int64_t count_of(const sj_tensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}

/* One thread: its own session, `runs_per_thread` forwards over the input sets in turn. */
static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    sj_session *session = NULL;
    sj_status *status = sj_session_create(model, &session);
    if (status) { fail("sj_session_create", status); return NULL; }
    for (int run = 0; run < runs_per_thread; run++) {
        int set = (run + id) % INPUT_SETS;
        sj_tensor input = input_info;
        input.data = inputs[set];
        sj_tensor output;
        status = sj_session_run(session, &input, 1, NULL, 1, &output);
        if (status) { fail("sj_session_run", status); break; }
        if (count_of(&output) != output_count || memcmp(output.data, expected[set], (size_t)output_count * sizeof(float)) != 0) {
            fail("a threaded run differs from the single-threaded reference", NULL);
            break;
        }
    }
    sj_session_free(session);
    return NULL;
}

/* Expects `status` to be an error of `code` whose message contains `needle`. */
static void expect_error(sj_status *status, sj_code code, const char *needle, const char *what) {
    if (!status) { fail(what, NULL); return; }
    if (sj_status_code(status) != code || !strstr(sj_status_message(status), needle)) {
        fprintf(stderr, "FAIL: %s: code %d, message '%s' (wanted code %d and '%s')\n", what, sj_status_code(status),
                sj_status_message(status), code, needle);
        failures++;
    } else {
        printf("ok: %s -> %s\n", what, sj_status_message(status));
    }
    sj_status_free(status);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s NET.prototxt [THREADS] [RUNS]\n", argv[0]); return 2; }
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    if (argc > 3) runs_per_thread = atoi(argv[3]);

    sj_options *options = sj_options_create();
    sj_options_set_seed(options, 7);
    sj_status *status = sj_model_load(argv[1], NULL, options, &model);
    sj_options_free(options);
    if (status) { fail("sj_model_load", status); return 1; }
    if ((status = sj_model_input(model, 0, &input_info))) { fail("sj_model_input", status); return 1; }
    input_count = count_of(&input_info);

    /* References: one session, one thread. */
    sj_session *reference = NULL;
    if ((status = sj_session_create(model, &reference))) { fail("sj_session_create", status); return 1; }
    uint64_t state = 42;
    for (int set = 0; set < INPUT_SETS; set++) {
        inputs[set] = malloc((size_t)input_count * sizeof(float));
        for (int64_t i = 0; i < input_count; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            inputs[set][i] = (float)(state >> 40) / 16777216.0f;
        }
        sj_tensor input = input_info, output;
        input.data = inputs[set];
        if ((status = sj_session_run(reference, &input, 1, NULL, 1, &output))) { fail("reference run", status); return 1; }
        output_count = count_of(&output);
        expected[set] = malloc((size_t)output_count * sizeof(float));
        memcpy(expected[set], output.data, (size_t)output_count * sizeof(float));
    }
    if (memcmp(expected[0], expected[1], (size_t)output_count * sizeof(float)) == 0) {
        fail("different inputs gave identical outputs: the check could not tell sessions apart", NULL);
    }

    /* Bad input: each gets an error status naming the problem, and the session still works after. */
    sj_tensor wrong = input_info;
    int64_t wrong_dims[SJ_MAX_DIMS];
    memcpy(wrong_dims, input_info.dims, sizeof(int64_t) * (size_t)input_info.ndim);
    wrong_dims[0] += 1;
    wrong.dims = wrong_dims;
    wrong.data = inputs[0];
    sj_tensor out;
    expect_error(sj_session_run(reference, &wrong, 1, NULL, 1, &out), SJ_INVALID_ARGUMENT, "has shape", "wrong input shape");
    sj_tensor unknown = input_info;
    unknown.name = "no_such_blob";
    unknown.data = inputs[0];
    expect_error(sj_session_run(reference, &unknown, 1, NULL, 1, &out), SJ_INVALID_ARGUMENT, "no_such_blob", "unknown input name");
    const char *bad_output = "nope";
    sj_tensor good = input_info;
    good.data = inputs[0];
    expect_error(sj_session_run(reference, &good, 1, &bad_output, 1, &out), SJ_INVALID_ARGUMENT, "nope", "unknown output name");
    expect_error(sj_session_run(NULL, &good, 1, NULL, 1, &out), SJ_INVALID_ARGUMENT, "NULL", "NULL session");
    sj_model *none = NULL;
    expect_error(sj_model_load("/no/such/net.prototxt", NULL, NULL, &none), SJ_NOT_FOUND, "no such file", "missing prototxt");
    const char broken[] = "layer { name: 'a' type: 'Input' top: 'a' input_param { shape { dim: 1 } }\n";
    expect_error(sj_model_load_from_memory(broken, sizeof broken - 1, NULL, 0, NULL, &none), SJ_INVALID_MODEL, "<prototxt in memory>:",
                 "malformed prototxt in memory");
    if ((status = sj_session_run(reference, &good, 1, NULL, 1, &out))) fail("a good run after errors", status);
    else if (memcmp(out.data, expected[0], (size_t)output_count * sizeof(float)) != 0) fail("a good run after errors differs", NULL);

    /* Many threads, one model, one session each. */
    pthread_t *ids = malloc(sizeof(pthread_t) * (size_t)threads);
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, worker, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    free(ids);

    printf("%d threads x %d runs, model constants %lld bytes, session arena %lld bytes: %s\n", threads, runs_per_thread,
           (long long)sj_model_constant_bytes(model), (long long)sj_session_arena_bytes(reference), failures ? "FAILED" : "all equal");
    sj_session_free(reference);
    sj_model_free(model);
    for (int set = 0; set < INPUT_SETS; set++) { free(inputs[set]); free(expected[set]); }
    return failures ? 1 : 0;
}
