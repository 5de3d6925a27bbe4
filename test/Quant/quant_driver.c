/* Runs one lib/Quant function on raw little-endian float32 files, so that
 * Python tests can compare it with a numpy implementation.
 *
 *   iq-quant-driver hadamard N ROWS IN OUT
 *   iq-quant-driver hadamard-transposed N ROWS IN OUT
 *   iq-quant-driver hadamard-matrix N OUT            (float64, N x N)
 *   iq-quant-driver per-token BITS CLIP_MAX CLIP_MIN ROWS COLS IN OUT
 *   iq-quant-driver groupwise BITS CLIP_MAX CLIP_MIN GROUP ROWS COLS IN OUT
 *   iq-quant-driver weight-rtn BITS SYMMETRIC MSE_CLIP ROWS COLS IN OUT
 *   iq-quant-driver gptq BITS SYMMETRIC BLOCK ROWS COLS TOKENS W_IN X_IN OUT
 *   iq-quant-driver lac-loss GROUP ROWS OUT IN F_MAX F_MIN X_IN W_IN
 *     prints the loss and its gradients d/df_max, d/df_min (one clip pair
 *     shared by every group)
 *   iq-quant-driver psot LAYER WINDOWS TOKENS HIDDEN HEADS KV_HEADS HEAD_DIM
 *                   EPOCHS LR KEEP_BEST X P V M
 *     prints, per stage, the loss on all windows with no rotation, with
 *     the random Hadamard start and with the returned matrices (stage 2
 *     as Mcost and Vcost), and the mean batch losses of each epoch.
 *
 * The quantizer commands write, in order: the dequantized values, the
 * codes (as float32), the scales and the zero points. */
#include "iq/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *read_floats(const char *path, size_t count) {
  FILE *file = fopen(path, "rb");
  if (file == NULL) {
    fprintf(stderr, "iq-quant-driver: cannot open %s\n", path);
    return NULL;
  }
  float *data = malloc(count * sizeof(float) + 1);
  size_t got = data == NULL ? 0 : fread(data, sizeof(float), count, file);
  fclose(file);
  if (data == NULL || got != count) {
    fprintf(stderr, "iq-quant-driver: %s holds fewer than %zu float32 values\n",
            path, count);
    free(data);
    return NULL;
  }
  return data;
}

static bool write_parts(const char *path, const void *const *parts,
                        const size_t *bytes, size_t count) {
  FILE *file = fopen(path, "wb");
  if (file == NULL) {
    fprintf(stderr, "iq-quant-driver: cannot create %s\n", path);
    return false;
  }
  bool ok = true;
  for (size_t i = 0; i < count; ++i) {
    ok = ok && fwrite(parts[i], 1, bytes[i], file) == bytes[i];
  }
  ok = fclose(file) == 0 && ok;
  if (!ok) {
    fprintf(stderr, "iq-quant-driver: writing %s failed\n", path);
  }
  return ok;
}

static size_t parse_size(const char *text) { return (size_t)strtoull(text, NULL, 10); }

/* Writes dequantized, codes, scales and zeros of a quantizer run. */
static bool write_quantized(const char *path, const float *dequantized,
                            const uint8_t *codes, size_t count,
                            const float *scales, const float *zeros,
                            size_t param_count) {
  float *code_values = malloc(count * sizeof(float) + 1);
  if (code_values == NULL) {
    return false;
  }
  for (size_t i = 0; i < count; ++i) {
    code_values[i] = (float)codes[i];
  }
  const void *parts[] = {dequantized, code_values, scales, zeros};
  size_t bytes[] = {count * sizeof(float), count * sizeof(float),
                    param_count * sizeof(float), param_count * sizeof(float)};
  bool ok = write_parts(path, parts, bytes, 4);
  free(code_values);
  return ok;
}

static int run_quantizer(int argc, char **argv) {
  const char *command = argv[1];
  bool groupwise = strcmp(command, "groupwise") == 0;
  bool weight = strcmp(command, "weight-rtn") == 0;
  int expected = groupwise ? 10 : 9;
  if (argc != expected) {
    fprintf(stderr, "iq-quant-driver: wrong argument count for %s\n", command);
    return 2;
  }
  int bits = atoi(argv[2]);
  size_t group = groupwise ? parse_size(argv[5]) : 0;
  int shift = groupwise ? 1 : 0;
  size_t rows = parse_size(argv[5 + shift]);
  size_t cols = parse_size(argv[6 + shift]);
  size_t count = rows * cols;
  size_t param_count = rows;
  if (groupwise) {
    param_count = group == 0 ? 0 : rows * (cols / group);
  }
  float *x = read_floats(argv[7 + shift], count);
  float *dequantized = malloc(count * sizeof(float) + 1);
  uint8_t *codes = malloc(count + 1);
  float *scales = malloc(param_count * sizeof(float) + 1);
  float *zeros = malloc(param_count * sizeof(float) + 1);
  iq_error_t *error = NULL;
  bool ok = x != NULL && dequantized != NULL && codes != NULL && scales != NULL &&
            zeros != NULL;
  if (ok && weight) {
    iq_weight_quant_options_t options;
    iq_weight_quant_options_init(&options);
    options.bits = bits;
    options.symmetric = atoi(argv[3]) != 0;
    options.mse_clip = atoi(argv[4]) != 0;
    ok = iq_quantize_weight_rtn(x, rows, cols, &options, codes, scales, zeros,
                                dequantized, &error);
  } else if (ok && groupwise) {
    ok = iq_quantize_groupwise(x, rows, cols, group, bits, strtof(argv[3], NULL),
                               strtof(argv[4], NULL), codes, scales, zeros,
                               dequantized, &error);
  } else if (ok) {
    ok = iq_quantize_per_token(x, rows, cols, bits, strtof(argv[3], NULL),
                               strtof(argv[4], NULL), codes, scales, zeros,
                               dequantized, &error);
  }
  if (error != NULL) {
    iq_error_print(error, "iq-quant-driver", stderr);
    iq_error_destroy(error);
  }
  ok = ok && write_quantized(argv[8 + shift], dequantized, codes, count, scales,
                             zeros, param_count);
  free(x);
  free(dequantized);
  free(codes);
  free(scales);
  free(zeros);
  return ok ? 0 : 1;
}

static int run_hadamard(int argc, char **argv) {
  iq_error_t *error = NULL;
  bool ok;
  if (strcmp(argv[1], "hadamard-matrix") == 0) {
    if (argc != 4) {
      fprintf(stderr, "iq-quant-driver: usage: hadamard-matrix N OUT\n");
      return 2;
    }
    size_t n = parse_size(argv[2]);
    double *matrix = malloc(n * n * sizeof(double) + 1);
    ok = matrix != NULL && iq_hadamard_matrix(n, matrix, &error);
    if (ok) {
      const void *parts[] = {matrix};
      size_t bytes[] = {n * n * sizeof(double)};
      ok = write_parts(argv[3], parts, bytes, 1);
    }
    free(matrix);
  } else {
    if (argc != 6) {
      fprintf(stderr, "iq-quant-driver: usage: %s N ROWS IN OUT\n", argv[1]);
      return 2;
    }
    size_t n = parse_size(argv[2]);
    size_t rows = parse_size(argv[3]);
    float *x = read_floats(argv[4], n * rows);
    bool transposed = strcmp(argv[1], "hadamard-transposed") == 0;
    ok = x != NULL &&
         (transposed ? iq_hadamard_transform_rows_transposed(x, rows, n, &error)
                     : iq_hadamard_transform_rows(x, rows, n, &error));
    if (ok) {
      const void *parts[] = {x};
      size_t bytes[] = {n * rows * sizeof(float)};
      ok = write_parts(argv[5], parts, bytes, 1);
    }
    free(x);
  }
  if (error != NULL) {
    iq_error_print(error, "iq-quant-driver", stderr);
    iq_error_destroy(error);
  }
  return ok ? 0 : 1;
}

/* GPTQ with the MSE clip search; X^T X is summed from X_IN. */
static int run_gptq(int argc, char **argv) {
  if (argc != 11) {
    fprintf(stderr, "iq-quant-driver: wrong argument count for gptq\n");
    return 2;
  }
  iq_gptq_options_t options;
  iq_gptq_options_init(&options);
  options.weight.bits = atoi(argv[2]);
  options.weight.symmetric = atoi(argv[3]) != 0;
  options.block_size = parse_size(argv[4]);
  size_t rows = parse_size(argv[5]);
  size_t cols = parse_size(argv[6]);
  size_t tokens = parse_size(argv[7]);
  float *w = read_floats(argv[8], rows * cols);
  float *x = read_floats(argv[9], tokens * cols);
  double *xtx = calloc(cols * cols + 1, sizeof(double));
  float *dequantized = malloc(rows * cols * sizeof(float) + 1);
  uint8_t *codes = malloc(rows * cols + 1);
  float *scales = malloc(rows * sizeof(float) + 1);
  float *zeros = malloc(rows * sizeof(float) + 1);
  iq_error_t *error = NULL;
  bool ok = w != NULL && x != NULL && xtx != NULL && dequantized != NULL &&
            codes != NULL && scales != NULL && zeros != NULL &&
            iq_gptq_accumulate(x, tokens, cols, xtx, &error) &&
            iq_gptq_quantize(w, rows, cols, xtx, (double)tokens, &options, codes,
                             scales, zeros, dequantized, &error);
  if (error != NULL) {
    iq_error_print(error, "iq-quant-driver", stderr);
    iq_error_destroy(error);
  }
  ok = ok && write_quantized(argv[10], dequantized, codes, rows * cols, scales,
                             zeros, rows);
  free(w);
  free(x);
  free(xtx);
  free(dequantized);
  free(codes);
  free(scales);
  free(zeros);
  return ok ? 0 : 1;
}

/* The three costs of a layer on all rows: X, Mcost, Vcost, P. */
static bool psot_costs(const iq_psot_layer_input_t *in, const float *weights,
                       size_t blocks, const double *q1, const double *q2,
                       const double *q4, double costs[4], iq_error_t **error) {
  size_t rows = in->windows * in->tokens;
  double loss;
  return iq_psot_block_cost(in->x, rows, in->hidden, blocks, q1, weights, 2.0, true,
                            &costs[0], NULL, error) &&
         iq_psot_head_cost(in->v, in->m, rows, in->heads, in->kv_heads, in->head_dim,
                           q2, weights + 2 * rows, weights + 3 * rows, 2.0, true, &loss,
                           &costs[1], &costs[2], NULL, error) &&
         iq_psot_block_cost(in->p, rows, in->hidden, blocks, q4, weights + rows, 2.0,
                            true, &costs[3], NULL, error);
}

static void print_epoch(void *user, int epoch, int epochs, const double losses[3]) {
  printf("epoch %d/%d: stage1 %.4f stage2 %.4f stage3 %.4f\n", epoch + 1, epochs,
         losses[0], losses[1], losses[2]);
}

/* Fills `matrices` with `count` copies of one n x n matrix: the identity,
 * or the random Hadamard of seed 0. */
static bool fill_start(double *matrices, size_t count, size_t n, bool hadamard) {
  memset(matrices, 0, n * n * sizeof(double));
  for (size_t i = 0; i < n; ++i) {
    matrices[i * n + i] = 1.0;
  }
  if (hadamard && !iq_random_hadamard(n, 0, matrices, NULL)) {
    return false;
  }
  for (size_t c = 1; c < count; ++c) {
    memcpy(matrices + c * n * n, matrices, n * n * sizeof(double));
  }
  return true;
}

static int run_psot(int argc, char **argv) {
  if (argc != 16) {
    fprintf(stderr, "iq-quant-driver: wrong argument count for psot\n");
    return 2;
  }
  iq_psot_layer_input_t in = {0};
  in.layer = parse_size(argv[2]);
  in.windows = parse_size(argv[3]);
  in.tokens = parse_size(argv[4]);
  in.hidden = parse_size(argv[5]);
  in.heads = parse_size(argv[6]);
  in.kv_heads = parse_size(argv[7]);
  in.head_dim = parse_size(argv[8]);
  iq_psot_options_t options;
  iq_psot_options_init(&options);
  options.epochs = atoi(argv[9]);
  options.lr[0] = options.lr[1] = options.lr[2] = strtod(argv[10], NULL);
  options.keep_best = atoi(argv[11]) != 0;
  size_t rows = in.windows * in.tokens;
  size_t blocks = options.block_diag;
  size_t d = blocks == 0 ? 0 : in.hidden / blocks;
  size_t hd = in.head_dim;
  float *x = read_floats(argv[12], rows * in.hidden);
  float *p = read_floats(argv[13], rows * in.hidden);
  float *v = read_floats(argv[14], rows * in.kv_heads * hd);
  float *m = read_floats(argv[15], rows * in.heads * hd);
  in.x = x;
  in.p = p;
  in.v = v;
  in.m = m;
  float *weights = malloc(4 * rows * sizeof(float) + 1);
  float *deviation = malloc(rows * sizeof(float) + 1);
  size_t block_values = blocks * d * d;
  size_t head_values = in.kv_heads * hd * hd;
  float *q1 = malloc(block_values * sizeof(float) + 1);
  float *q4 = malloc(block_values * sizeof(float) + 1);
  float *q2 = malloc(head_values * sizeof(float) + 1);
  double *b1 = malloc(block_values * sizeof(double) + 1);
  double *b4 = malloc(block_values * sizeof(double) + 1);
  double *b2 = malloc(head_values * sizeof(double) + 1);
  iq_error_t *error = NULL;
  bool ok = x != NULL && p != NULL && v != NULL && m != NULL && weights != NULL &&
            deviation != NULL && q1 != NULL && q2 != NULL && q4 != NULL &&
            b1 != NULL && b2 != NULL && b4 != NULL;
  /* The token weights the driver computes, for the same evaluation. */
  const float *tensors[4] = {x, p, v, m};
  size_t widths[4] = {in.hidden, in.hidden, in.kv_heads * hd, in.heads * hd};
  for (size_t t = 0; ok && t < 4; ++t) {
    for (size_t w = 0; w < in.windows; ++w) {
      iq_psot_window_deviation(tensors[t] + w * in.tokens * widths[t], in.tokens,
                               widths[t], deviation + w * in.tokens);
    }
    iq_psot_token_weights(deviation, in.windows, in.tokens, in.layer, &options,
                          weights + t * rows);
  }
  const char *labels[3] = {"identity", "hadamard", "psot"};
  for (int start = 0; ok && start < 2; ++start) {
    double costs[4];
    ok = fill_start(b1, blocks, d, start == 1) && fill_start(b2, in.kv_heads, hd, start == 1) &&
         psot_costs(&in, weights, blocks, b1, b2, b1, costs, &error);
    if (ok) {
      printf("%s: X %.4f M %.4f V %.4f P %.4f\n", labels[start], costs[0], costs[1],
             costs[2], costs[3]);
    }
  }
  ok = ok && iq_psot_layer(&in, &options, print_epoch, NULL, q1, q2, q4, NULL, &error);
  if (ok) {
    for (size_t i = 0; i < block_values; ++i) {
      b1[i] = (double)q1[i];
      b4[i] = (double)q4[i];
    }
    for (size_t i = 0; i < head_values; ++i) {
      b2[i] = (double)q2[i];
    }
    double costs[4];
    ok = psot_costs(&in, weights, blocks, b1, b2, b4, costs, &error);
    if (ok) {
      printf("%s: X %.4f M %.4f V %.4f P %.4f\n", labels[2], costs[0], costs[1],
             costs[2], costs[3]);
    }
  }
  if (error != NULL) {
    iq_error_print(error, "iq-quant-driver", stderr);
    iq_error_destroy(error);
  }
  free(x);
  free(p);
  free(v);
  free(m);
  free(weights);
  free(deviation);
  free(q1);
  free(q2);
  free(q4);
  free(b1);
  free(b2);
  free(b4);
  return ok ? 0 : 1;
}

static int run_lac_loss(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "iq-quant-driver: wrong argument count for lac-loss\n");
    return 2;
  }
  iq_lac_options_t options;
  iq_lac_options_init(&options);
  options.group_size = parse_size(argv[2]);
  size_t rows = parse_size(argv[3]);
  size_t out = parse_size(argv[4]);
  size_t in = parse_size(argv[5]);
  size_t groups = options.group_size == 0 ? 1 : in / options.group_size;
  float *x = read_floats(argv[8], rows * in);
  float *w = read_floats(argv[9], out * in);
  double *f_max = malloc(groups * sizeof(double) + 1);
  double *f_min = malloc(groups * sizeof(double) + 1);
  double *grad_max = malloc(groups * sizeof(double) + 1);
  double *grad_min = malloc(groups * sizeof(double) + 1);
  iq_error_t *error = NULL;
  bool ok = x != NULL && w != NULL && f_max != NULL && f_min != NULL && grad_max != NULL &&
            grad_min != NULL;
  for (size_t g = 0; ok && g < groups; ++g) {
    f_max[g] = strtod(argv[6], NULL);
    f_min[g] = strtod(argv[7], NULL);
  }
  double loss = 0.0;
  ok = ok && iq_lac_loss(x, rows, w, out, in, &options, f_max, f_min, &loss, grad_max,
                         grad_min, &error);
  if (ok) {
    printf("loss %.17g\n", loss);
    for (size_t g = 0; g < groups; ++g) {
      printf("grad %zu %.17g %.17g\n", g, grad_max[g], grad_min[g]);
    }
  }
  if (error != NULL) {
    iq_error_print(error, "iq-quant-driver", stderr);
    iq_error_destroy(error);
  }
  free(x);
  free(w);
  free(f_max);
  free(f_min);
  free(grad_max);
  free(grad_min);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "iq-quant-driver: missing command; see the comment in quant_driver.c\n");
    return 2;
  }
  if (strncmp(argv[1], "hadamard", 8) == 0) {
    return run_hadamard(argc, argv);
  }
  if (strcmp(argv[1], "per-token") == 0 || strcmp(argv[1], "groupwise") == 0 ||
      strcmp(argv[1], "weight-rtn") == 0) {
    return run_quantizer(argc, argv);
  }
  if (strcmp(argv[1], "lac-loss") == 0) {
    return run_lac_loss(argc, argv);
  }
  if (strcmp(argv[1], "psot") == 0) {
    return run_psot(argc, argv);
  }
  if (strcmp(argv[1], "gptq") == 0) {
    return run_gptq(argc, argv);
  }
  fprintf(stderr, "iq-quant-driver: unknown command '%s'\n", argv[1]);
  return 2;
}
