/*
 * classify.c — run a Caffe net from C through SwiftJIT's C API.
 *
 *   cc -std=c99 -I include Examples/c/classify.c -L .build/release -lswiftjit -o classify
 *   ./classify Examples/lenet/lenet.prototxt [lenet.caffemodel] [--input x.npy] [--save-input x.npy]
 *
 * Loads the net (weights from the caffemodel, or the prototxt's fillers without one), feeds every
 * input — the float32 C-order .npy given with --input, or deterministic pseudo-random values in
 * [0, 1) — runs it once, and prints each output: its name and shape, then every value with %.9g
 * (enough digits to read back the exact float), then for a 2-D output the top class of each row.
 * --save-input writes the generated input as .npy, so `swiftjit run` can be fed the same values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "swiftjit.h"

/* Prints the status's message and exits when a call failed. */
static void check(sj_status *status, const char *what) {
    if (status == NULL) return;
    (void)what; /* the message names the file, layer or blob itself */
    fprintf(stderr, "error: %s\n", sj_status_message(status));
    sj_status_free(status);
    exit(1);
}

static int64_t element_count(const sj_tensor *t) {
    int64_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}

/* xorshift64*: the same values on every platform, so runs can be compared. */
static float next_uniform(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 2685821657736338717ULL) >> 40) / 16777216.0f;
}

/* Reads a little-endian float32 C-order .npy holding exactly `count` values. */
static float *read_npy(const char *path, int64_t count) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "error: %s: cannot open\n", path); exit(1); }
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "error: %s: not a .npy file\n", path); exit(1);
    }
    size_t header = magic[8] | (magic[9] << 8);
    if (magic[6] >= 2) { /* version 2+: 4-byte header length */
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) { fprintf(stderr, "error: %s: truncated\n", path); exit(1); }
        header |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
    }
    char *text = malloc(header + 1);
    if (fread(text, 1, header, f) != header) { fprintf(stderr, "error: %s: truncated header\n", path); exit(1); }
    text[header] = 0;
    if (!strstr(text, "'<f4'") || strstr(text, "'fortran_order': True")) {
        fprintf(stderr, "error: %s: expected float32 ('<f4') in C order, header is %s\n", path, text); exit(1);
    }
    free(text);
    float *values = malloc((size_t)count * sizeof(float));
    if (fread(values, sizeof(float), (size_t)count, f) != (size_t)count) {
        fprintf(stderr, "error: %s: holds fewer than the %lld values the input needs\n", path, (long long)count); exit(1);
    }
    fclose(f);
    return values;
}

/* Writes `values` as a float32 C-order .npy of shape `t`. */
static void write_npy(const char *path, const sj_tensor *t, const float *values) {
    char shape[512] = "";
    for (int32_t i = 0; i < t->ndim; i++) {
        char dim[32];
        snprintf(dim, sizeof dim, "%lld,%s", (long long)t->dims[i], i + 1 < t->ndim ? " " : "");
        strncat(shape, dim, sizeof shape - strlen(shape) - 1);
    }
    char header[640];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
    int padded = ((10 + n + 1 + 63) / 64) * 64 - 10; /* header + newline, total a multiple of 64 */
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "error: %s: cannot write\n", path); exit(1); }
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char length[2] = {(unsigned char)(padded & 0xff), (unsigned char)(padded >> 8)};
    fwrite(length, 1, 2, f);
    fwrite(header, 1, (size_t)n, f);
    for (int i = n; i < padded - 1; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(values, sizeof(float), (size_t)element_count(t), f);
    fclose(f);
}

int main(int argc, char **argv) {
    const char *net = NULL, *weights = NULL, *input_path = NULL, *save_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--input") == 0 && i + 1 < argc) input_path = argv[++i];
        else if (strcmp(argv[i], "--save-input") == 0 && i + 1 < argc) save_path = argv[++i];
        else if (!net) net = argv[i];
        else if (!weights) weights = argv[i];
    }
    if (!net) {
        fprintf(stderr, "usage: %s NET.prototxt [WEIGHTS.caffemodel] [--input x.npy] [--save-input x.npy]\n", argv[0]);
        return 2;
    }
    printf("# swiftjit %s\n", sj_version());

    sj_model *model = NULL;
    check(sj_model_load(net, weights, NULL, &model), net);
    if (sj_model_input_count(model) != 1) {
        fprintf(stderr, "error: %s: classify feeds one input; this net has %d\n", net, sj_model_input_count(model));
        return 1;
    }
    sj_session *session = NULL;
    check(sj_session_create(model, &session), "creating a session");

    sj_tensor input;
    check(sj_model_input(model, 0, &input), "reading the input");
    int64_t count = element_count(&input);
    float *values;
    if (input_path) {
        values = read_npy(input_path, count);
    } else {
        values = malloc((size_t)count * sizeof(float));
        uint64_t state = 1;
        for (int64_t i = 0; i < count; i++) values[i] = next_uniform(&state);
    }
    if (save_path) write_npy(save_path, &input, values);
    input.data = values;

    int32_t output_count = sj_model_output_count(model);
    sj_tensor *outputs = calloc((size_t)output_count, sizeof(sj_tensor));
    check(sj_session_run(session, &input, 1, NULL, (size_t)output_count, outputs), "running the net");

    for (int32_t k = 0; k < output_count; k++) {
        const sj_tensor *out = &outputs[k];
        printf("%s", out->name);
        for (int32_t i = 0; i < out->ndim; i++) printf("%s%lld", i ? "x" : " ", (long long)out->dims[i]);
        printf("\n");
        int64_t n = element_count(out);
        for (int64_t i = 0; i < n; i++) printf("%.9g\n", out->data[i]);
        if (out->ndim == 2) {
            for (int64_t row = 0; row < out->dims[0]; row++) {
                int64_t best = 0;
                for (int64_t c = 1; c < out->dims[1]; c++)
                    if (out->data[row * out->dims[1] + c] > out->data[row * out->dims[1] + best]) best = c;
                printf("# item %lld: class %lld\n", (long long)row, (long long)best);
            }
        }
    }
    free(outputs);
    free(values);
    sj_session_free(session);
    sj_model_free(model);
    return 0;
}
