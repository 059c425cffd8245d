/*
 * swiftjit.h — the C API of SwiftJIT, a Caffe-compatible, JIT-compiled deep-learning runtime.
 *
 * Build:  tools/setup.sh   (makes .build/release/libswiftjit.so)
 * Use:    cc -std=c99 -I include app.c -L .build/release -lswiftjit
 *
 * Objects (all opaque; every one is freed with its own *_free function, which accepts NULL):
 *
 *   sj_model    A loaded net for inference: its definition, its weights, and every constant the
 *               compiler prepares from them (packed panels, transformed filters), held once and
 *               read-only. A model is thread-safe: any thread may create sessions from it.
 *   sj_session  One execution context of a model: its own activation arena. Used by one thread
 *               at a time (one session per thread). Creating a second session for the same shapes
 *               compiles nothing: kernels and constants are the model's.
 *   sj_net      A net driven the way pycaffe drives one: every blob's data and diff readable and
 *               writable in place, forward and backward over ranges of layers, parameters in place,
 *               layers implemented by the caller (Caffe's "Python" layers). One thread at a time.
 *   sj_solver   Caffe's solver loop (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) over an
 *               sj_net, from a solver prototxt. One thread at a time.
 *
 * Errors: every call that can fail returns an sj_status pointer: NULL on success, otherwise an
 * error whose message is the same one-line diagnostic the swiftjit CLI prints (file:line:column,
 * layer, what was expected, and a hint). Free it with sj_status_free.
 *
 * Memory: pointers the library returns (names, shapes, tensor data) belong to the object they
 * came from and stay valid as the documentation of each call says; never free them.
 *
 * Thread safety: sj_model_* and sj_version are safe from any thread. A session, net or solver
 * must not be used by two threads at once (use one per thread).
 */
#ifndef SWIFTJIT_H
#define SWIFTJIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Version and status
 * ------------------------------------------------------------------------------------------- */

/** The library's version, "MAJOR.MINOR.PATCH". */
const char *sj_version(void);
/** The C API's version number; bumped when a declaration in this header changes incompatibly. */
#define SJ_API_VERSION 1
int32_t sj_api_version(void);

typedef struct sj_status sj_status;

/** Broad kinds of failure, to branch on; the message says exactly what went wrong. */
typedef enum sj_code {
    SJ_OK = 0,
    SJ_INVALID_ARGUMENT = 1, /* a bad shape, unknown blob name, NULL where an object is needed   */
    SJ_NOT_FOUND = 2,        /* a file that does not exist, a blob or layer the net lacks          */
    SJ_INVALID_MODEL = 3,    /* a malformed prototxt, truncated caffemodel, unsupported layer      */
    SJ_RUNTIME = 4,          /* a failure while running: out of memory, a caller's layer failed    */
    SJ_CALLBACK = 5          /* a layer implemented by the caller returned an error                */
} sj_code;

sj_code sj_status_code(const sj_status *status);
/** The one-line diagnostic (UTF-8), valid until the status is freed. */
const char *sj_status_message(const sj_status *status);
void sj_status_free(sj_status *status);

/* ---------------------------------------------------------------------------------------------
 * Shapes and tensors
 * ------------------------------------------------------------------------------------------- */

/** Blobs have at most this many axes (Caffe's limit is 32). */
#define SJ_MAX_DIMS 32

/** A named float32 tensor in C (row-major) order. */
typedef struct sj_tensor {
    const char *name;
    int32_t ndim;
    const int64_t *dims;
    /* For inputs: values the call reads (copied into the session). For outputs: the session's own
     * memory, valid until the session's next run, reshape or free. */
    const float *data;
} sj_tensor;

/** Caffe's phases. */
typedef enum sj_phase { SJ_PHASE_TRAIN = 0, SJ_PHASE_TEST = 1 } sj_phase;

/* ---------------------------------------------------------------------------------------------
 * Options (for models, nets and solvers)
 * ------------------------------------------------------------------------------------------- */

typedef struct sj_options sj_options;

sj_options *sj_options_create(void);
void sj_options_free(sj_options *options);
/** TEST (the default for models and nets) or TRAIN. */
void sj_options_set_phase(sj_options *options, sj_phase phase);
/** Overrides an input blob's shape (an Input layer's top, or a data layer's top). */
sj_status *sj_options_set_input_shape(sj_options *options, const char *name, const int64_t *dims, int32_t ndim);
/** Threads for JIT'd kernels and GEMMs (default: one per core). */
void sj_options_set_threads(sj_options *options, int32_t threads);
/** Seed for weight fillers and dropout (default 1). */
void sj_options_set_seed(sj_options *options, uint64_t seed);
/** Where compiled kernels are kept between processes (default: none, or $SWIFTJIT_CACHE_DIR when
 *  set); NULL turns the disk cache off. */
void sj_options_set_kernel_cache_dir(sj_options *options, const char *directory);
/** Caffe's NetState for phase rules: its level and stages (for nets and models). */
void sj_options_set_level(sj_options *options, int32_t level);
void sj_options_add_stage(sj_options *options, const char *stage);

/* ---------------------------------------------------------------------------------------------
 * Models and sessions (inference)
 * ------------------------------------------------------------------------------------------- */

typedef struct sj_model sj_model;
typedef struct sj_session sj_session;

/** Loads a net from a prototxt file (any Caffe dialect) and, when `weights_path` is not NULL, a
 *  .caffemodel; without weights, parameters come from the prototxt's fillers (options' seed).
 *  `options` may be NULL. */
sj_status *sj_model_load(const char *prototxt_path, const char *weights_path, const sj_options *options, sj_model **out);
/** The same from memory: prototxt text and caffemodel bytes (`weights` may be NULL). */
sj_status *sj_model_load_from_memory(const char *prototxt, size_t prototxt_size, const void *weights, size_t weights_size,
                                     const sj_options *options, sj_model **out);
void sj_model_free(sj_model *model);

/** The model's inputs and outputs, in net order, with the shapes the prototxt (or the options)
 *  give. Names and dims stay valid for the model's lifetime. */
int32_t sj_model_input_count(const sj_model *model);
int32_t sj_model_output_count(const sj_model *model);
sj_status *sj_model_input(const sj_model *model, int32_t index, sj_tensor *info /* data is NULL */);
sj_status *sj_model_output(const sj_model *model, int32_t index, sj_tensor *info /* data is NULL */);
/** Bytes of weights and prepared constants the model holds, shared by all of its sessions. */
int64_t sj_model_constant_bytes(const sj_model *model);

/** A new execution context for the model's input shapes (compiled on first use, then shared). */
sj_status *sj_session_create(sj_model *model, sj_session **out);
void sj_session_free(sj_session *session);
/** Compiles (or takes from the model) the context for new input shapes: `inputs` gives names,
 *  ndim and dims (data is ignored). Inputs not named keep their shape. */
sj_status *sj_session_reshape(sj_session *session, const sj_tensor *inputs, size_t input_count);
/** Runs forward. Every input must be given, with exactly the session's shape (an error names the
 *  blob and both shapes). `output_names` selects outputs (NULL: all of the net's outputs, in
 *  order); `outputs` must hold that many entries and receives pointers into the session's memory,
 *  valid until its next run, reshape or free. With outputs NULL and output_count 0 the
 *  net runs and nothing is read back. */
sj_status *sj_session_run(sj_session *session, const sj_tensor *inputs, size_t input_count,
                          const char *const *output_names, size_t output_count, sj_tensor *outputs);
/** Zero-copy input: the session's own buffer for input `name` (write the values there, then call
 *  sj_session_run with input_count 0 for the inputs written this way). Valid until reshape/free. */
sj_status *sj_session_input_buffer(sj_session *session, const char *name, float **data, int64_t *count);
/** Bytes of the session's activation arena (its private memory). */
int64_t sj_session_arena_bytes(const sj_session *session);

/* ---------------------------------------------------------------------------------------------
 * Nets driven like pycaffe's caffe.Net
 * ------------------------------------------------------------------------------------------- */

typedef struct sj_net sj_net;

/** What a caller-implemented layer is asked to do (see sj_layer_function). */
typedef enum sj_layer_stage {
    SJ_LAYER_SETUP = 0,   /* once, when the net is built: read parameters; set top shapes       */
    SJ_LAYER_RESHAPE = 1, /* before the first forward and whenever bottom shapes change: set top shapes */
    SJ_LAYER_FORWARD = 2, /* read bottoms' data, write tops' data                                */
    SJ_LAYER_BACKWARD = 3 /* read tops' diff (and data), write bottoms' diff where propagate_down */
} sj_layer_stage;

/** A blob as a caller's layer sees it. In SETUP and RESHAPE, data and diff are NULL and the
 *  layer writes its tops' ndim and dims; in FORWARD and BACKWARD they point at the blob. */
typedef struct sj_blob_ref {
    const char *name;
    int32_t ndim;
    int64_t dims[SJ_MAX_DIMS];
    float *data;
    float *diff;
} sj_blob_ref;

/** A layer the caller implements (prototxt `type: "Python"`, identified by `layer_index` and
 *  `layer_name`). Return 0 on success; any other value stops the pass, and the call that ran it
 *  returns an SJ_CALLBACK status naming the layer (the caller keeps its own error details).
 *  In a solver's nets, which share one options' function and user pointer, `layer_index` is
 *  `net * 65536 + layer` (net 0: the train net, net i + 1: test net i), so that each net's layer
 *  gets its own instance; for sj_net_create nets it is the layer index. */
typedef int32_t (*sj_layer_function)(void *user, int32_t layer_index, const char *layer_name, sj_layer_stage stage,
                                     int32_t bottom_count, sj_blob_ref *bottoms, int32_t top_count, sj_blob_ref *tops,
                                     const int32_t *propagate_down);

/** Set before sj_net_create to run "Python" layers through `function`; without it such layers
 *  are an error naming them. */
void sj_options_set_layer_function(sj_options *options, sj_layer_function function, void *user);

/** Builds a net for pycaffe-style use: every blob keeps its own data and diff (no memory reuse),
 *  data layers (DummyData, Input) are part of the net, and backward is available in both phases.
 *  `weights_path` may be NULL (fillers, seeded by the options). */
sj_status *sj_net_create(const char *prototxt_path, const char *weights_path, const sj_options *options, sj_net **out);
void sj_net_free(sj_net *net);

/** Layers, in net order (after phase filtering; Caffe's automatic Split layers are not listed). */
int32_t sj_net_layer_count(const sj_net *net);
const char *sj_net_layer_name(const sj_net *net, int32_t layer);
const char *sj_net_layer_type(const sj_net *net, int32_t layer);
int32_t sj_net_layer_bottom_count(const sj_net *net, int32_t layer);
const char *sj_net_layer_bottom(const sj_net *net, int32_t layer, int32_t index);
int32_t sj_net_layer_top_count(const sj_net *net, int32_t layer);
const char *sj_net_layer_top(const sj_net *net, int32_t layer, int32_t index);
int32_t sj_net_layer_param_count(const sj_net *net, int32_t layer);
/** A "Python" layer's python_param: module, layer (class) and param_str ("" when absent). */
sj_status *sj_net_layer_python_param(const sj_net *net, int32_t layer, const char **module, const char **class_name,
                                     const char **param_str);

/** Blobs, in the order Caffe creates them (a layer's tops, in net order; in-place tops once). */
int32_t sj_net_blob_count(const sj_net *net);
const char *sj_net_blob_name(const sj_net *net, int32_t blob);
/** The net's input blobs (Input layers' tops and pycaffe's net.inputs) and output blobs. */
int32_t sj_net_input_count(const sj_net *net);
const char *sj_net_input_name(const sj_net *net, int32_t index);
int32_t sj_net_output_count(const sj_net *net);
const char *sj_net_output_name(const sj_net *net, int32_t index);
/** A blob's loss weight (Caffe's blob_loss_weights; 0 for blobs that are not losses). */
float sj_net_blob_loss_weight(const sj_net *net, const char *name);

/** A blob's current shape, and its data and diff in place (C order). Pointers stay valid until
 *  the net is reshaped or freed; after a reshape, ask again. */
sj_status *sj_net_blob(sj_net *net, const char *name, sj_blob_ref *blob);
/** A layer's parameter blob `index` (0: weights, 1: bias, ...) in place, like sj_net_blob. */
sj_status *sj_net_param(sj_net *net, int32_t layer, int32_t index, sj_blob_ref *blob);

/** Sets an input blob's shape for the next sj_net_reshape (pycaffe's blob.reshape on an input). */
sj_status *sj_net_set_input_shape(sj_net *net, const char *name, const int64_t *dims, int32_t ndim);
/** Propagates new input shapes through the net (recompiling for them; blob values of the inputs
 *  are kept where their size did not change). Parameters are kept. */
sj_status *sj_net_reshape(sj_net *net);

/** Forward over layers `start..=end` (indices as in sj_net_layer_*; -1: first / last layer).
 *  Returns the loss (Σ loss weight × loss) through `loss` when not NULL. */
sj_status *sj_net_forward(sj_net *net, int32_t start, int32_t end, float *loss);
/** Backward over layers `end` down to `start` (inclusive; -1: last / first). Uses the diffs the
 *  tops hold: loss blobs' diffs are set to their loss weight by a full forward. */
sj_status *sj_net_backward(sj_net *net, int32_t start, int32_t end);
/** Zeroes every parameter's diff. */
void sj_net_clear_param_diffs(sj_net *net);
/** Writes the parameters as a .caffemodel (Caffe's binary NetParameter). */
sj_status *sj_net_save(sj_net *net, const char *path);
/** Copies parameters from a .caffemodel by layer name (Caffe's CopyTrainedLayersFrom). */
sj_status *sj_net_copy_from(sj_net *net, const char *path);
/** Makes `net`'s parameters the same memory as `other`'s, layer by layer, for layers with the same
 *  name and parameter shapes (Caffe's ShareTrainedLayersWith). */
sj_status *sj_net_share_with(sj_net *net, const sj_net *other);

/* ---------------------------------------------------------------------------------------------
 * Solvers
 * ------------------------------------------------------------------------------------------- */

typedef struct sj_solver sj_solver;

/** Reads a solver prototxt (its type picks SGD, Nesterov, AdaGrad, RMSProp, AdaDelta or Adam) and
 *  builds its train net and test nets as sj_nets. Relative paths in it are resolved from the
 *  current directory, then from the solver's folder. `options` may be NULL; of them the solver
 *  uses threads, the kernel cache and the layer function (phase, shapes, seed and net state come
 *  from the solver prototxt). */
sj_status *sj_solver_create(const char *solver_path, const sj_options *options, sj_solver **out);
void sj_solver_free(sj_solver *solver);
/** The train net and the test nets; owned by the solver (do not free), valid for its lifetime.
 *  The test nets share the train net's parameters. */
sj_net *sj_solver_net(sj_solver *solver);
int32_t sj_solver_test_net_count(const sj_solver *solver);
sj_net *sj_solver_test_net(sj_solver *solver, int32_t index);
/** Runs `iterations` iterations of Caffe's Solver::Step (test, forward/backward over iter_size,
 *  update, display, snapshot). The smoothed loss of the last iteration goes to `loss` when not NULL. */
sj_status *sj_solver_step(sj_solver *solver, int32_t iterations, float *loss);
/** Runs to max_iter (Caffe's Solver::Solve), with the final snapshot and test. */
sj_status *sj_solver_solve(sj_solver *solver);
/** Applies one update from the diffs the train net holds (pycaffe's solver.apply_update()). */
sj_status *sj_solver_apply_update(sj_solver *solver);
int32_t sj_solver_iteration(const sj_solver *solver);
/** Writes prefix_iter_N.caffemodel and .solverstate; their paths go to `model_path` and
 *  `state_path` (valid until the next call on the solver) when not NULL. */
sj_status *sj_solver_snapshot(sj_solver *solver, const char **model_path, const char **state_path);
/** Restores a .solverstate (and the .caffemodel it names, looked up beside it). */
sj_status *sj_solver_restore(sj_solver *solver, const char *state_path);

#ifdef __cplusplus
}
#endif
#endif /* SWIFTJIT_H */
