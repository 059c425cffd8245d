/*
 * sessions_memory.c — what N concurrent sessions of one model cost in memory, through the C API.
 *
 *   sessions_memory NET.prototxt WEIGHTS.caffemodel SESSIONS
 *
 * Loads the model, then starts SESSIONS threads that each create a session and run it (all
 * sessions alive at once), and prints, as `key value` lines: the process's resident memory before
 * loading, after loading, after the first session and with all sessions alive; the model's constant
 * bytes (weights and prepared constants, held once); one session's arena bytes; and the bound the
 * project's issue sets — growth over the process before loading at most constants + SESSIONS x arena
 * + 64 MiB. Inputs are zeros: memory, not values, is measured here.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swiftjit.h"

static sj_model *model;
static pthread_barrier_t all_alive, measured;

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

static void check(sj_status *status, const char *what) {
    if (!status) return;
    fprintf(stderr, "error: %s: %s\n", what, sj_status_message(status));
    exit(1);
}

static void run_once(sj_session *session) {
    int32_t inputs = sj_model_input_count(model);
    sj_tensor *given = calloc((size_t)inputs, sizeof(sj_tensor));
    float **buffers = calloc((size_t)inputs, sizeof(float *));
    for (int32_t i = 0; i < inputs; i++) {
        check(sj_model_input(model, i, &given[i]), "input");
        int64_t n = 1;
        for (int32_t d = 0; d < given[i].ndim; d++) n *= given[i].dims[d];
        buffers[i] = calloc((size_t)n, sizeof(float));
        given[i].data = buffers[i];
    }
    check(sj_session_run(session, given, (size_t)inputs, NULL, 0, NULL), "run");
    for (int32_t i = 0; i < inputs; i++) free(buffers[i]);
    free(buffers);
    free(given);
}

static void *worker(void *unused) {
    (void)unused;
    sj_session *session = NULL;
    check(sj_session_create(model, &session), "session");
    run_once(session);
    pthread_barrier_wait(&all_alive);   /* every session exists and has run */
    pthread_barrier_wait(&measured);    /* main has read the RSS */
    sj_session_free(session);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s NET.prototxt WEIGHTS.caffemodel SESSIONS\n", argv[0]); return 2; }
    int sessions = atoi(argv[3]);
    long before = rss_kib();
    check(sj_model_load(argv[1], argv[2], NULL, &model), argv[1]);
    long loaded = rss_kib();
    sj_session *first = NULL;
    check(sj_session_create(model, &first), "session");
    run_once(first);
    long one = rss_kib();
    int64_t arena = sj_session_arena_bytes(first);
    sj_session_free(first);

    pthread_barrier_init(&all_alive, NULL, (unsigned)sessions + 1);
    pthread_barrier_init(&measured, NULL, (unsigned)sessions + 1);
    pthread_t *ids = calloc((size_t)sessions, sizeof(pthread_t));
    for (int i = 0; i < sessions; i++) pthread_create(&ids[i], NULL, worker, NULL);
    pthread_barrier_wait(&all_alive);
    long all = rss_kib();
    pthread_barrier_wait(&measured);
    for (int i = 0; i < sessions; i++) pthread_join(ids[i], NULL);

    int64_t constants = sj_model_constant_bytes(model);
    double mib = 1024.0 * 1024.0;
    double growth = (all - before) / 1024.0;
    double bound = (constants + sessions * arena) / mib + 64;
    printf("rss_before_load_mib %.1f\n", before / 1024.0);
    printf("rss_after_load_mib %.1f\n", loaded / 1024.0);
    printf("rss_one_session_mib %.1f\n", one / 1024.0);
    printf("rss_%d_sessions_mib %.1f\n", sessions, all / 1024.0);
    printf("constants_mib %.1f\n", constants / mib);
    printf("arena_per_session_mib %.1f\n", arena / mib);
    printf("growth_mib %.1f\n", growth);
    printf("bound_mib %.1f\n", bound);
    printf("%s\n", growth <= bound ? "within bound" : "OVER bound");
    sj_model_free(model);
    return growth <= bound ? 0 : 1;
}
