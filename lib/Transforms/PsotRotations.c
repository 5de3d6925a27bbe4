/* iq-psot: learns InfoQuant's per-layer rotations (PSOT, see iq/quant.h)
 * from the activations of a statistics file and writes them as the
 * rotations store that iq-rotate method=infoquant reads. The IR is left
 * unchanged, and the module only supplies the model's sizes (iq.config).
 *
 * The statistics must have been recorded on the norm-fused float graph
 * with every row of every window sampled, because iq_psot_layer takes
 * windows x tokens rows with one token count per window. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/Diagnostics.h"

#include "iq/passes.h"
#include "iq/quant.h"
#include "iq/statistics.h"
#include "iq/weight_store.h"

#define PASS "iq-psot"

typedef struct model_sizes {
  int64_t layers, hidden, heads, kv_heads, head_dim;
} model_sizes_t;

static int64_t config_int(MlirAttribute config, const char *key) {
  MlirAttribute value =
      mlirDictionaryAttrGetElementByName(config, mlirStringRefCreateFromCString(key));
  return mlirAttributeIsNull(value) || !mlirAttributeIsAInteger(value)
             ? -1
             : mlirIntegerAttrGetValueInt(value);
}

static bool read_sizes(MlirOperation module, model_sizes_t *sizes, iq_error_t **error) {
  MlirAttribute config =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.config"));
  if (mlirAttributeIsNull(config) || !mlirAttributeIsADictionary(config))
    return iq_error_set(error, NULL, PASS, "run --iq-raise-llama first",
                        "the module has no iq.config: it is not a canonical LLaMA graph");
  sizes->layers = config_int(config, "layers");
  sizes->hidden = config_int(config, "hidden_size");
  sizes->heads = config_int(config, "num_heads");
  sizes->kv_heads = config_int(config, "num_kv_heads");
  sizes->head_dim = config_int(config, "head_dim");
  if (sizes->layers < 1 || sizes->hidden < 1 || sizes->heads < 1 || sizes->kv_heads < 1 ||
      sizes->head_dim < 1)
    return iq_error_set(error, NULL, PASS, "run --iq-raise-llama first",
                        "iq.config lacks layers, hidden_size, num_heads, num_kv_heads or head_dim");
  return true;
}

/* Finds (layer, point) and checks that it contains every row of every
 * window and has `channels` channels. */
static bool find_rows(const iq_statistics_t *statistics, const char *path, uint32_t layer,
                      iq_observe_point_t point, int64_t channels, iq_statistics_point_t *out,
                      iq_error_t **error) {
  const char *name = iq_observe_point_name(point);
  if (!iq_statistics_find(statistics, layer, point, out))
    return iq_error_set(error, path, PASS, "record the statistics with iq-calibrate on this model",
                        "the statistics file has no entry for layer %" PRIu32 " point %s", layer,
                        name);
  if ((int64_t)out->channels != channels)
    return iq_error_set(error, path, PASS,
                        "calibrate the norm-fused float graph of this model (before iq-rotate)",
                        "layer %" PRIu32 " point %s has %" PRIu32 " channels; the model needs %" PRId64,
                        layer, name, out->channels, channels);
  if ((uint64_t)out->sample_rows != out->token_count)
    return iq_error_set(error, path, PASS,
                        "calibrate with sample-rows >= windows * length (iq-compile "
                        "--method infoquant does this)",
                        "layer %" PRIu32 " point %s keeps %" PRIu32 " of %" PRIu64
                        " rows; PSOT needs every row of every window",
                        layer, name, out->sample_rows, out->token_count);
  return true;
}

typedef struct progress_state {
  uint32_t layer, layers;
  double start_s;
} progress_state_t;

static double now_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Prints one line per layer and epoch with the losses, the elapsed time
 * and an estimate of the time left (elapsed time per epoch so far, times
 * the epochs still to run). */
static void report_epoch(void *user, int epoch, int epochs, const double losses[3]) {
  progress_state_t *state = user;
  double elapsed = now_seconds() - state->start_s;
  double done = (double)state->layer * epochs + epoch + 1;
  double total = (double)state->layers * epochs;
  double left = elapsed / done * (total - done);
  fprintf(stderr,
          "%s: layer %" PRIu32 "/%" PRIu32 " epoch %d/%d: losses %.5g %.5g %.5g; %.0f s elapsed, "
          "about %.0f s left\n",
          PASS, state->layer + 1, state->layers, epoch + 1, epochs, losses[0], losses[1],
          losses[2], elapsed, left);
}

static bool add_matrices(iq_weight_store_writer_t *writer, uint32_t layer, const char *kind,
                         const float *matrices, size_t count, int64_t n, iq_error_t **error) {
  for (size_t j = 0; j < count; ++j) {
    char name[96];
    snprintf(name, sizeof name, "layers.%" PRIu32 ".%s.%zu", layer, kind, j);
    int64_t dims[2] = {n, n};
    if (!iq_weight_store_writer_add(writer, name, IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 2, dims,
                                    matrices + j * (size_t)(n * n),
                                    (uint64_t)(n * n) * sizeof(float), error))
      return false;
  }
  return true;
}

/* Runs PSOT on one layer of the statistics and appends its matrices. */
static bool learn_layer(const iq_statistics_t *statistics, const char *path,
                        const model_sizes_t *sizes, uint32_t layer,
                        const iq_psot_options_t *options, progress_state_t *progress,
                        iq_weight_store_writer_t *writer, iq_error_t **error) {
  const iq_statistics_info_t *info = iq_statistics_get_info(statistics);
  iq_statistics_point_t x, p, v, m;
  if (!find_rows(statistics, path, layer, IQ_OBSERVE_X, sizes->hidden, &x, error) ||
      !find_rows(statistics, path, layer, IQ_OBSERVE_P, sizes->hidden, &p, error) ||
      !find_rows(statistics, path, layer, IQ_OBSERVE_V, sizes->kv_heads * sizes->head_dim, &v,
                 error) ||
      !find_rows(statistics, path, layer, IQ_OBSERVE_M, sizes->heads * sizes->head_dim, &m,
                 error))
    return false;

  iq_psot_layer_input_t input = {
      .x = x.samples, .p = p.samples, .v = v.samples, .m = m.samples,
      .windows = info->windows, .tokens = info->window_length,
      .hidden = (size_t)sizes->hidden, .heads = (size_t)sizes->heads,
      .kv_heads = (size_t)sizes->kv_heads, .head_dim = (size_t)sizes->head_dim,
      .layer = layer,
      /* token_outlier is iq_psot_window_deviation of each window, stored
       * [windows x tokens] in the same token order as the samples. */
      .x_deviation = x.token_outlier, .p_deviation = p.token_outlier,
      .v_deviation = v.token_outlier, .m_deviation = m.token_outlier,
  };
  size_t blocks = options->block_diag, d = (size_t)sizes->hidden / blocks;
  size_t hd = (size_t)sizes->head_dim, kv = (size_t)sizes->kv_heads;
  float *q1 = malloc(blocks * d * d * sizeof *q1);
  float *q4 = malloc(blocks * d * d * sizeof *q4);
  float *q2 = malloc(kv * hd * hd * sizeof *q2);
  bool ok = q1 && q4 && q2;
  if (!ok)
    iq_error_set(error, NULL, PASS, NULL, "out of memory for the layer %" PRIu32 " rotations",
                 layer);
  progress->layer = layer;
  ok = ok && iq_psot_layer(&input, options, report_epoch, progress, q1, q2, q4, NULL, error);
  ok = ok && add_matrices(writer, layer, "q1", q1, blocks, (int64_t)d, error) &&
       add_matrices(writer, layer, "q4", q4, blocks, (int64_t)d, error) &&
       add_matrices(writer, layer, "q2", q2, kv, (int64_t)hd, error);
  free(q1);
  free(q4);
  free(q2);
  return ok;
}

bool iq_psot_write_rotations(MlirOperation module, const char *statistics_path,
                             const char *output_path, const iq_psot_options_t *options,
                             iq_error_t **error) {
  model_sizes_t sizes;
  if (!read_sizes(module, &sizes, error))
    return false;
  if (options->block_diag == 0 || sizes.hidden % (int64_t)options->block_diag != 0)
    return iq_error_set(error, NULL, "block-diag", "use a block count that divides the hidden size",
                        "block-diag=%zu does not divide the hidden size %" PRId64,
                        options->block_diag, sizes.hidden);
  iq_statistics_t *statistics = iq_statistics_open(statistics_path, error);
  if (!statistics)
    return false;
  const iq_statistics_info_t *info = iq_statistics_get_info(statistics);
  if ((int64_t)info->layers != sizes.layers) {
    iq_statistics_close(statistics);
    return iq_error_set(error, statistics_path, PASS, "calibrate this model",
                        "the statistics describe %" PRIu32 " layers; the model has %" PRId64,
                        info->layers, sizes.layers);
  }
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(output_path, error);
  bool ok = writer != NULL;
  progress_state_t progress = {.layers = info->layers, .start_s = now_seconds()};
  for (uint32_t layer = 0; ok && layer < info->layers; ++layer)
    ok = learn_layer(statistics, statistics_path, &sizes, layer, options, &progress, writer, error);
  if (ok)
    ok = iq_weight_store_writer_finish(writer, error);
  else if (writer)
    iq_weight_store_writer_abandon(writer);
  iq_statistics_close(statistics);
  return ok;
}

/* ---- The pass --------------------------------------------------------------- */

static const iq_pass_option_info_t psot_options[] = {
    {"statistics", IQ_OPTION_STRING, "",
     "statistics file (.iqs) recorded on the norm-fused float graph with every row sampled", NULL,
     1, 0},
    {"output", IQ_OPTION_STRING, "", "rotations store to write (.iqw), for iq-rotate", NULL, 1, 0},
    {"block-diag", IQ_OPTION_INT, "2", "blocks of Q1 and Q4 (each hidden/b square)", NULL, 1,
     1 << 20},
    {"epochs", IQ_OPTION_INT, "4", "passes over the windows per layer", NULL, 1, 1 << 20},
    {"lr", IQ_OPTION_FLOAT, "2", "initial learning rate of the three stages", NULL, 1e-12, 1e6},
    {"lr-end-factor", IQ_OPTION_FLOAT, "0.01",
     "learning rate of the last epoch relative to the first (linear decay)", NULL, 1e-6, 1},
    {"temperature", IQ_OPTION_FLOAT, "2", "softmax temperature of the peak cost", NULL, 1e-6,
     1e6},
    {"batch-windows", IQ_OPTION_INT, "4", "windows per Cayley step", NULL, 1, 1 << 20},
    {"aug-token", IQ_OPTION_FLOAT, "30",
     "weight of outlier tokens in the cost; 1 or less weights every token 1", NULL, 0, 1e6},
    {"aug-start", IQ_OPTION_INT, "2", "layers below this weight every token by aug-token", NULL,
     0, 1 << 20},
    {"keep-best", IQ_OPTION_BOOL, "true",
     "return per stage the matrices with the lowest loss over all windows (start or end of an "
     "epoch) instead of the last ones",
     NULL, 1, 0},
    {"seed", IQ_OPTION_INT, "0", "seed of the random Hadamard start, shuffles and retractions",
     NULL, 0, 1LL << 62},
};

static void psot_options_from_pass(const iq_pass_options_t *pass_options,
                                  iq_psot_options_t *options) {
  iq_psot_options_init(options);
  options->block_diag = (size_t)iq_pass_option_int(pass_options, "block-diag");
  options->epochs = (int)iq_pass_option_int(pass_options, "epochs");
  double lr = iq_pass_option_float(pass_options, "lr");
  options->lr[0] = options->lr[1] = options->lr[2] = lr;
  options->lr_end_factor = iq_pass_option_float(pass_options, "lr-end-factor");
  options->temperature = iq_pass_option_float(pass_options, "temperature");
  options->batch_windows = (size_t)iq_pass_option_int(pass_options, "batch-windows");
  options->aug_token = iq_pass_option_float(pass_options, "aug-token");
  options->aug_start = (size_t)iq_pass_option_int(pass_options, "aug-start");
  options->keep_best = iq_pass_option_bool(pass_options, "keep-best");
  options->seed = (uint64_t)iq_pass_option_int(pass_options, "seed");
}

static bool run_psot(MlirOperation root, const iq_pass_options_t *pass_options) {
  const char *statistics = iq_pass_option_string(pass_options, "statistics");
  const char *output = iq_pass_option_string(pass_options, "output");
  iq_error_t *error = NULL;
  if (!*statistics || !*output) {
    iq_error_set(&error, NULL, PASS,
                 "e.g. --iq-psot='statistics=model.iqs output=rotations.iqw'",
                 "the options statistics and output are required");
  } else {
    iq_psot_options_t options;
    psot_options_from_pass(pass_options, &options);
    iq_psot_write_rotations(root, statistics, output, &options, &error);
  }
  if (!error)
    return true;
  char *message = iq_error_format(error);
  mlirEmitError(mlirOperationGetLocation(root), message ? message : PASS " failed");
  free(message);
  iq_error_destroy(error);
  return false;
}

const iq_pass_info_t iq_psot_pass = {
    .name = "iq-psot",
    .description = "Learn InfoQuant's per-layer PSOT rotations from a statistics file and write "
                   "them for iq-rotate method=infoquant (leaves the IR unchanged)",
    .options = psot_options,
    .num_options = sizeof psot_options / sizeof psot_options[0],
    .run = run_psot,
};
