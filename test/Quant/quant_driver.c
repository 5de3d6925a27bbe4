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
  int expected = groupwise ? 10 : weight ? 9 : 9;
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
  size_t param_count = groupwise ? (group == 0 ? 0 : rows * (cols / group)) : rows;
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
  if (strcmp(argv[1], "gptq") == 0) {
    return run_gptq(argc, argv);
  }
  fprintf(stderr, "iq-quant-driver: unknown command '%s'\n", argv[1]);
  return 2;
}
