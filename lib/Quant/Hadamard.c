/* Normalized Hadamard transforms of size K * 2^m; see iq/quant.h. */
#include "iq/quant.h"
#include "quant_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The tables, embedded from data/hadamard/ by lib/Quant/CMakeLists.txt. */
extern const char iq_hadamard_had172[], iq_hadamard_had156[],
    iq_hadamard_had140[], iq_hadamard_had108[], iq_hadamard_had60[],
    iq_hadamard_had52[], iq_hadamard_had36[], iq_hadamard_had28[],
    iq_hadamard_had44[], iq_hadamard_had40[], iq_hadamard_had20[],
    iq_hadamard_had12[];

#define TABLE_COUNT 12

typedef struct hadamard_table {
  size_t order;
  const char *text;
  signed char *entries; /* order x order, +1 or -1, after parsing */
} hadamard_table_t;

/* The search order of the reference implementation: the first K that
 * divides n with a power-of-two quotient wins. */
static hadamard_table_t tables[TABLE_COUNT] = {
    {172, iq_hadamard_had172, NULL}, {156, iq_hadamard_had156, NULL},
    {140, iq_hadamard_had140, NULL}, {108, iq_hadamard_had108, NULL},
    {60, iq_hadamard_had60, NULL},   {52, iq_hadamard_had52, NULL},
    {36, iq_hadamard_had36, NULL},   {28, iq_hadamard_had28, NULL},
    {44, iq_hadamard_had44, NULL},   {40, iq_hadamard_had40, NULL},
    {20, iq_hadamard_had20, NULL},   {12, iq_hadamard_had12, NULL},
};

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static char tables_problem[160];
/* One allocation for every parsed table. It lives until the process ends,
 * and the pointer kept here lets leak checkers see it as reachable. */
static signed char *tables_storage;

/* Parses one table: `order` lines of `order` '+' or '-' characters. */
static bool parse_table(hadamard_table_t *table, signed char *entries) {
  const char *cursor = table->text;
  for (size_t row = 0; row < table->order; ++row) {
    for (size_t column = 0; column < table->order; ++column) {
      char c = *cursor++;
      if (c != '+' && c != '-') {
        snprintf(tables_problem, sizeof tables_problem,
                 "had%zu: row %zu column %zu is '%c', expected '+' or '-'",
                 table->order, row, column, c == '\0' ? '0' : c);
        return false;
      }
      entries[row * table->order + column] = c == '+' ? 1 : -1;
    }
    while (*cursor == '\r' || *cursor == '\n') {
      ++cursor;
    }
  }
  table->entries = entries;
  return true;
}

/* Checks H * H^T == order * I exactly (integer arithmetic). */
static bool check_table(const hadamard_table_t *table) {
  size_t k = table->order;
  for (size_t i = 0; i < k; ++i) {
    for (size_t j = 0; j < k; ++j) {
      long dot = 0;
      for (size_t c = 0; c < k; ++c) {
        dot += table->entries[i * k + c] * table->entries[j * k + c];
      }
      long expected = i == j ? (long)k : 0;
      if (dot != expected) {
        snprintf(tables_problem, sizeof tables_problem,
                 "had%zu: (H*H^T)[%zu][%zu] = %ld, expected %ld", k, i, j,
                 dot, expected);
        return false;
      }
    }
  }
  return true;
}

static void load_tables(void) {
  size_t total = 0;
  for (size_t t = 0; t < TABLE_COUNT; ++t) {
    total += tables[t].order * tables[t].order;
  }
  tables_storage = malloc(total);
  if (tables_storage == NULL) {
    snprintf(tables_problem, sizeof tables_problem,
             "out of memory for the Hadamard tables");
    return;
  }
  signed char *next = tables_storage;
  for (size_t t = 0; t < TABLE_COUNT; ++t) {
    if (!parse_table(&tables[t], next) || !check_table(&tables[t])) {
      return;
    }
    next += tables[t].order * tables[t].order;
  }
}

static bool is_power_of_two(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

/* Finds the table for n; `*table` is NULL for K = 1. */
static bool find_factor(size_t n, const hadamard_table_t **table,
                        iq_error_t **error) {
  pthread_once(&tables_once, load_tables);
  if (tables_problem[0] != '\0') {
    return iq_error_set(error, NULL, "hadamard", "rebuild iq from a clean checkout of data/hadamard/",
                        "embedded Hadamard table is invalid: %s", tables_problem);
  }
  *table = NULL;
  if (n == 0) {
    return iq_error_set(error, NULL, "hadamard", NULL,
                        "Hadamard size 0 is invalid");
  }
  for (size_t t = 0; t < TABLE_COUNT; ++t) {
    if (n % tables[t].order == 0 && is_power_of_two(n / tables[t].order)) {
      *table = &tables[t];
      return true;
    }
  }
  if (is_power_of_two(n)) {
    return true;
  }
  return iq_error_set(
      error, NULL, "hadamard",
      "use a size K*2^m with K in {1, 12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172}",
      "no Hadamard transform of size %zu: it is not a power of two times a "
      "stored table order",
      n);
}

bool iq_hadamard_factor(size_t n, size_t *k, iq_error_t **error) {
  const hadamard_table_t *table;
  if (!find_factor(n, &table, error)) {
    return false;
  }
  *k = table == NULL ? 1 : table->order;
  return true;
}

/* The transforms are written once for float and once for double. The
 * Walsh-Hadamard butterfly gives the Sylvester order. */
#define DEFINE_TRANSFORM(SUFFIX, T)                                            \
  static void fwht_##SUFFIX(T *x, size_t m) {                                 \
    for (size_t h = 1; h < m; h *= 2) {                                        \
      for (size_t i = 0; i < m; i += 2 * h) {                                  \
        for (size_t j = i; j < i + h; ++j) {                                   \
          T a = x[j];                                                          \
          T b = x[j + h];                                                      \
          x[j] = a + b;                                                        \
          x[j + h] = a - b;                                                    \
        }                                                                      \
      }                                                                        \
    }                                                                          \
  }                                                                            \
                                                                               \
  /* Mixes the K rows of x ([k x m]) with the table or its transpose. */     \
  static void mix_rows_##SUFFIX(T *x, size_t m,                               \
                                const hadamard_table_t *table, bool transpose, \
                                T *scratch) {                                  \
    size_t k = table->order;                                                   \
    for (size_t a = 0; a < k; ++a) {                                           \
      T *out = scratch + a * m;                                                \
      memset(out, 0, m * sizeof(T));                                           \
      for (size_t b = 0; b < k; ++b) {                                         \
        signed char sign = transpose ? table->entries[b * k + a]               \
                                     : table->entries[a * k + b];              \
        const T *in = x + b * m;                                               \
        if (sign > 0) {                                                        \
          for (size_t c = 0; c < m; ++c) {                                     \
            out[c] += in[c];                                                   \
          }                                                                    \
        } else {                                                               \
          for (size_t c = 0; c < m; ++c) {                                     \
            out[c] -= in[c];                                                   \
          }                                                                    \
        }                                                                      \
      }                                                                        \
    }                                                                          \
    memcpy(x, scratch, k * m * sizeof(T));                                     \
  }                                                                            \
                                                                               \
  /* Forward: FWHT per row, scale, mix with hadK. Transposed: mix with       \
   * hadK^T, scale, FWHT per row (H_{2^m} is symmetric). */                  \
  static bool transform_rows_##SUFFIX(T *x, size_t rows, size_t n,            \
                                      bool transpose, iq_error_t **error) {    \
    const hadamard_table_t *table;                                             \
    if (!find_factor(n, &table, error)) {                                      \
      return false;                                                            \
    }                                                                          \
    size_t k = table == NULL ? 1 : table->order;                               \
    size_t m = n / k;                                                          \
    T scale = (T)(1.0 / sqrt((double)n));                                      \
    T *scratch = NULL;                                                         \
    if (table != NULL) {                                                       \
      scratch = malloc(n * sizeof(T));                                         \
      if (scratch == NULL) {                                                   \
        return iq_error_set(error, NULL, "hadamard", NULL,                     \
                            "out of memory for a transform of size %zu", n);   \
      }                                                                        \
    }                                                                          \
    for (size_t r = 0; r < rows; ++r) {                                        \
      T *row = x + r * n;                                                      \
      if (table != NULL && transpose) {                                        \
        mix_rows_##SUFFIX(row, m, table, true, scratch);                       \
      }                                                                        \
      for (size_t a = 0; a < k; ++a) {                                         \
        fwht_##SUFFIX(row + a * m, m);                                         \
      }                                                                        \
      for (size_t i = 0; i < n; ++i) {                                         \
        row[i] *= scale;                                                       \
      }                                                                        \
      if (table != NULL && !transpose) {                                       \
        mix_rows_##SUFFIX(row, m, table, false, scratch);                      \
      }                                                                        \
    }                                                                          \
    free(scratch);                                                             \
    return true;                                                               \
  }

DEFINE_TRANSFORM(f32, float)
DEFINE_TRANSFORM(f64, double)

bool iq_hadamard_transform(float *x, size_t n, iq_error_t **error) {
  return transform_rows_f32(x, 1, n, false, error);
}

bool iq_hadamard_transform_transposed(float *x, size_t n, iq_error_t **error) {
  return transform_rows_f32(x, 1, n, true, error);
}

bool iq_hadamard_transform_rows(float *x, size_t rows, size_t n,
                                iq_error_t **error) {
  return transform_rows_f32(x, rows, n, false, error);
}

bool iq_hadamard_transform_rows_transposed(float *x, size_t rows, size_t n,
                                           iq_error_t **error) {
  return transform_rows_f32(x, rows, n, true, error);
}

bool iq_hadamard_transform_f64(double *x, size_t n, iq_error_t **error) {
  return transform_rows_f64(x, 1, n, false, error);
}

bool iq_hadamard_transform_transposed_f64(double *x, size_t n,
                                          iq_error_t **error) {
  return transform_rows_f64(x, 1, n, true, error);
}

/* Row j of the identity, transformed, is column j of Hn. The rows are
 * therefore Hn^T, and `transpose_result` turns them into Hn. */
static bool transformed_identity(size_t n, double *matrix,
                                 bool transpose_result, iq_error_t **error) {
  memset(matrix, 0, n * n * sizeof(double));
  for (size_t i = 0; i < n; ++i) {
    matrix[i * n + i] = 1.0;
  }
  if (!transform_rows_f64(matrix, n, n, false, error)) {
    return false;
  }
  if (transpose_result) {
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = i + 1; j < n; ++j) {
        double t = matrix[i * n + j];
        matrix[i * n + j] = matrix[j * n + i];
        matrix[j * n + i] = t;
      }
    }
  }
  return true;
}

bool iq_hadamard_matrix(size_t n, double *matrix, iq_error_t **error) {
  return transformed_identity(n, matrix, true, error);
}

void iq_random_signs(uint64_t seed, size_t n, double *signs) {
  uint64_t state = seed;
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = iq_splitmix64_next(&state);
    signs[i] = (z >> 63) != 0 ? -1.0 : 1.0;
  }
}

bool iq_random_hadamard(size_t n, uint64_t seed, double *matrix,
                        iq_error_t **error) {
  if (!transformed_identity(n, matrix, false, error)) {
    return false;
  }
  double *signs = malloc(n * sizeof(double));
  if (signs == NULL) {
    return iq_error_set(error, NULL, "hadamard", NULL,
                        "out of memory for %zu random signs", n);
  }
  iq_random_signs(seed, n, signs);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      matrix[i * n + j] *= signs[i];
    }
  }
  free(signs);
  return true;
}
