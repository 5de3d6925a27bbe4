/* The C side of libiqk.so: packing, activation quantization, kernel
 * selection at load time and the threaded calls into the generated
 * kernels (iqk_<isa>_gemv and iqk_<isa>_gemm, compiled from MLIR by
 * iq-kernels). The integer work happens only in the generated code. */
#include "iq/iq_kernels.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include "kernel_runtime.h"

/* ---- Errors ------------------------------------------------------------------ */

static _Thread_local char last_error[512];

int iqk_fail(const char *format, ...) {
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(last_error, sizeof last_error, format, arguments);
  va_end(arguments);
  return -1;
}

const char *iqk_last_error(void) { return last_error; }

/* ---- Kernel sets -------------------------------------------------------------- */

#define DECLARE_KERNELS(isa)                                                                      \
  iqk_gemv_fn iqk_##isa##_gemv, iqk_##isa##_gemv2;                                               \
  iqk_gemv_heads_fn iqk_##isa##_gemv_heads;                                                       \
  iqk_linear_f16_fn iqk_##isa##_linear_f16;                                                       \
  iqk_gemm_fn iqk_##isa##_gemm;                                                                   \
  iqk_quantize_fn iqk_##isa##_quantize, iqk_##isa##_quantize_h1, iqk_##isa##_quantize_h172,      \
      iqk_##isa##_quantize_h156, iqk_##isa##_quantize_h140, iqk_##isa##_quantize_h108,            \
      iqk_##isa##_quantize_h60, iqk_##isa##_quantize_h52, iqk_##isa##_quantize_h36,               \
      iqk_##isa##_quantize_h28, iqk_##isa##_quantize_h44, iqk_##isa##_quantize_h40,               \
      iqk_##isa##_quantize_h20, iqk_##isa##_quantize_h12;                                       \
  iqk_kv_append_fn iqk_##isa##_kv_append;                                                         \
  iqk_attention_fn iqk_##isa##_attention;

#define KERNEL_SET(isa)                                                                           \
  {                                                                                               \
    #isa, iqk_##isa##_gemv, iqk_##isa##_gemv2, iqk_##isa##_gemv_heads,                           \
        iqk_##isa##_linear_f16, iqk_##isa##_gemm, {                                               \
      iqk_##isa##_quantize, iqk_##isa##_quantize_h1, iqk_##isa##_quantize_h172,                  \
          iqk_##isa##_quantize_h156, iqk_##isa##_quantize_h140, iqk_##isa##_quantize_h108,        \
          iqk_##isa##_quantize_h60, iqk_##isa##_quantize_h52, iqk_##isa##_quantize_h36,           \
          iqk_##isa##_quantize_h28, iqk_##isa##_quantize_h44, iqk_##isa##_quantize_h40,           \
          iqk_##isa##_quantize_h20, iqk_##isa##_quantize_h12                                      \
    }                                                                                             \
    , iqk_##isa##_kv_append, iqk_##isa##_attention                                                \
  }

typedef struct iqk_kernel_set kernel_set_t;

#if defined(__x86_64__)
DECLARE_KERNELS(generic)
DECLARE_KERNELS(avx2)
DECLARE_KERNELS(avxvnni)
DECLARE_KERNELS(avx512vnni)
/* Best first. */
static const kernel_set_t kernel_sets[] = {
    KERNEL_SET(avx512vnni),
    KERNEL_SET(avxvnni),
    KERNEL_SET(avx2),
    KERNEL_SET(generic),
};

/* __builtin_cpu_supports reads cpuid and, for AVX and AVX-512, checks that
 * the OS saves the wider registers (xgetbv). */
static bool cpu_supports(const char *name) {
  __builtin_cpu_init();
  if (strcmp(name, "generic") == 0)
    return true;
  if (strcmp(name, "avx2") == 0)
    return __builtin_cpu_supports("avx2");
  if (strcmp(name, "avxvnni") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
  if (strcmp(name, "avx512vnni") == 0)
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw");
  return false;
}
#elif defined(__aarch64__)
DECLARE_KERNELS(generic)
DECLARE_KERNELS(dotprod)
DECLARE_KERNELS(i8mm)
static const kernel_set_t kernel_sets[] = {
    KERNEL_SET(i8mm),
    KERNEL_SET(dotprod),
    KERNEL_SET(generic),
};

/* Linux's AT_HWCAP bits (asm/hwcap.h): ASIMDDP is bit 20; AT_HWCAP2 bit
 * 13 is I8MM. */
#define HWCAP_ASIMDDP_BIT (1UL << 20)
#define HWCAP2_I8MM_BIT (1UL << 13)

static bool cpu_supports(const char *name) {
  unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  if (strcmp(name, "generic") == 0)
    return true;
  if (strcmp(name, "dotprod") == 0)
    return (hwcap & HWCAP_ASIMDDP_BIT) != 0;
  if (strcmp(name, "i8mm") == 0)
    return (hwcap & HWCAP_ASIMDDP_BIT) != 0 && (hwcap2 & HWCAP2_I8MM_BIT) != 0;
  return false;
}
#else
#error "the kernel runtime supports x86-64 and AArch64"
#endif

#define KERNEL_SET_COUNT (sizeof kernel_sets / sizeof kernel_sets[0])

static const kernel_set_t *selected;
static char selection_error[600];
static int thread_count = 1;

static const kernel_set_t *find_set(const char *name) {
  for (size_t i = 0; i < KERNEL_SET_COUNT; ++i)
    if (strcmp(kernel_sets[i].name, name) == 0)
      return &kernel_sets[i];
  return NULL;
}

int iqk_kernel_supported(const char *name) { return find_set(name) && cpu_supports(name); }

int iqk_select_kernel(const char *name) {
  const kernel_set_t *set = find_set(name);
  if (!set) {
    char names[128] = "";
    for (size_t i = 0; i < KERNEL_SET_COUNT; ++i)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
               kernel_sets[i].name);
    return iqk_fail("unknown kernel set '%s'; this library has %s", name, names);
  }
  if (!cpu_supports(name))
    return iqk_fail("kernel set '%s' needs instructions this CPU does not have; use one of the "
                "supported sets (generic always works)",
                name);
  selected = set;
  return 0;
}

const iqk_kernel_set_t *iqk_selected_set(void) {
  if (!selected)
    iqk_fail("%s", selection_error[0] ? selection_error : "no kernel set is selected");
  return selected;
}

const char *iqk_kernel_name(void) { return selected ? selected->name : "none"; }

int iqk_set_num_threads(int threads) {
  if (threads < 1 || threads > 64)
    return iqk_fail("invalid thread count %d; use 1 to 64", threads);
  thread_count = threads;
  return 0;
}

int iqk_num_threads(void) { return thread_count; }

/* Picks the kernels when the library loads: IQ_KERNEL when set (an invalid
 * value leaves none selected, and iqk_matmul reports why), else the first
 * supported set. */
__attribute__((constructor)) static void select_at_load(void) {
  const char *threads = getenv("IQ_NUM_THREADS");
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  thread_count = 1;
  if (online > 64)
    thread_count = 64;
  else if (online > 0)
    thread_count = (int)online;
  if (threads && *threads) {
    char *end;
    long value = strtol(threads, &end, 10);
    if (*end == '\0' && value >= 1 && value <= 64)
      thread_count = (int)value;
    else
      fprintf(stderr, "libiqk: warning: invalid IQ_NUM_THREADS '%s' (use 1 to 64); using %d\n",
              threads, thread_count);
  }

  const char *requested = getenv("IQ_KERNEL");
  if (requested && *requested) {
    if (iqk_select_kernel(requested) != 0)
      snprintf(selection_error, sizeof selection_error, "IQ_KERNEL: %s", last_error);
    return;
  }
  for (size_t i = 0; i < KERNEL_SET_COUNT; ++i)
    if (cpu_supports(kernel_sets[i].name)) {
      selected = &kernel_sets[i];
      return;
    }
}

/* ---- Weights ------------------------------------------------------------------ */

static bool valid_shape(int64_t rows, int64_t k, const char *what) {
  /* K * 15 * 15 * 2 must fit the int32 sums with room for the corrections. */
  if (rows < 1 || k < 1 || k > (1 << 20) || rows > (INT64_C(1) << 31)) {
    iqk_fail("invalid %s shape [%lld, %lld]; rows must be >= 1 and K in 1..1048576", what,
         (long long)rows, (long long)k);
    return false;
  }
  return true;
}

void iqk_weights_free(iqk_weights_t *weights) {
  if (!weights)
    return;
  free(weights->codes);
  free(weights->zero);
  free(weights->sum);
  free(weights->scale);
  free(weights);
}

static void *aligned_zeroed(size_t size) {
  void *memory = NULL;
  size_t rounded = (size + 63) / 64 * 64;
  if (posix_memalign(&memory, 64, rounded ? rounded : 64) != 0)
    return NULL;
  memset(memory, 0, rounded ? rounded : 64);
  return memory;
}

iqk_weights_t *iqk_weights_pack(int64_t n, int64_t k, const uint8_t *codes,
                                const uint8_t *zero_points, const float *scales) {
  if (!valid_shape(n, k, "weight"))
    return NULL;
  if (!codes || !zero_points || !scales) {
    iqk_fail("iqk_weights_pack: codes, zero points and scales must not be NULL");
    return NULL;
  }
  for (int64_t i = 0; i < n * k; ++i)
    if (codes[i] > 15) {
      iqk_fail("weight code %u at row %lld, k %lld is outside 0..15", codes[i], (long long)(i / k),
           (long long)(i % k));
      return NULL;
    }
  for (int64_t r = 0; r < n; ++r)
    if (zero_points[r] > 15) {
      iqk_fail("weight zero point %u of row %lld is outside 0..15", zero_points[r], (long long)r);
      return NULL;
    }

  iqk_weights_t *w = calloc(1, sizeof *w);
  if (!w) {
    iqk_fail("out of memory");
    return NULL;
  }
  w->n = n;
  w->k = k;
  w->blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K;
  w->groups = (n + IQK_GROUP_ROWS - 1) / IQK_GROUP_ROWS;
  int64_t rows = w->groups * IQK_GROUP_ROWS;
  w->codes = aligned_zeroed((size_t)(w->groups * w->blocks * 128));
  w->zero = aligned_zeroed((size_t)rows * sizeof(int32_t));
  w->sum = aligned_zeroed((size_t)rows * sizeof(int32_t));
  w->scale = aligned_zeroed((size_t)rows * sizeof(float));
  if (!w->codes || !w->zero || !w->sum || !w->scale) {
    iqk_weights_free(w);
    iqk_fail("out of memory packing a [%lld, %lld] weight", (long long)n, (long long)k);
    return NULL;
  }
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t *row = codes + r * k;
    int32_t sum = 0;
    int64_t group = r / IQK_GROUP_ROWS, lane = r % IQK_GROUP_ROWS;
    for (int64_t i = 0; i < k; ++i) {
      int64_t block = i / IQK_BLOCK_K, j = i % IQK_BLOCK_K;
      uint8_t *byte = &w->codes[(group * w->blocks + block) * 128 + lane * 32 + (j % 32)];
      *byte |= (uint8_t)(j < 32 ? row[i] : row[i] << 4);
      sum += row[i];
    }
    w->zero[r] = zero_points[r];
    w->sum[r] = sum;
    w->scale[r] = scales[r];
  }
  return w;
}

/* Asymmetric 4-bit min-max quantization of one row, the per-token rule of
 * iq_quantize_per_token (iq/quant.h): the range always contains 0, an
 * all-zero row uses [-1, 1], s = max((xmax - xmin) / 15, 1e-8),
 * z = round(-xmin / s), code = clamp(round(x / s) + z, 0, 15), rounding
 * half to even. */
static void quantize_row(const float *x, int64_t k, uint8_t *codes, int32_t *zero, float *scale) {
  float low = 0.0f, high = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    low = x[i] < low ? x[i] : low;
    high = x[i] > high ? x[i] : high;
  }
  if (low == 0.0f && high == 0.0f) {
    low = -1.0f;
    high = 1.0f;
  }
  float step = (high - low) / 15.0f;
  if (!(step >= 1e-8f))
    step = 1e-8f;
  float z = nearbyintf(-low / step);
  z = z < 0.0f ? 0.0f : (z > 15.0f ? 15.0f : z);
  for (int64_t i = 0; i < k; ++i) {
    float q = nearbyintf(x[i] / step) + z;
    q = q < 0.0f ? 0.0f : (q > 15.0f ? 15.0f : q);
    codes[i] = (uint8_t)q;
  }
  *zero = (int32_t)z;
  *scale = step;
}

iqk_weights_t *iqk_weights_quantize(int64_t n, int64_t k, const float *weights) {
  if (!valid_shape(n, k, "weight"))
    return NULL;
  uint8_t *codes = malloc((size_t)(n * k));
  uint8_t *zero_points = malloc((size_t)n);
  float *scales = malloc((size_t)n * sizeof(float));
  iqk_weights_t *packed = NULL;
  if (codes && zero_points && scales) {
    for (int64_t r = 0; r < n; ++r) {
      int32_t zero;
      quantize_row(weights + r * k, k, codes + r * k, &zero, &scales[r]);
      zero_points[r] = (uint8_t)zero;
    }
    packed = iqk_weights_pack(n, k, codes, zero_points, scales);
  } else {
    iqk_fail("out of memory quantizing a [%lld, %lld] weight", (long long)n, (long long)k);
  }
  free(codes);
  free(zero_points);
  free(scales);
  return packed;
}

/* ---- Activations -------------------------------------------------------------- */

iqk_activations_t *iqk_activations_create(int64_t max_m, int64_t k) {
  if (!valid_shape(max_m, k, "activation"))
    return NULL;
  iqk_activations_t *a = calloc(1, sizeof *a);
  if (!a) {
    iqk_fail("out of memory");
    return NULL;
  }
  a->k = k;
  a->blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K;
  a->capacity = max_m;
  a->clip = 1.0f;
  int64_t rows = (max_m + IQK_PANEL_ROWS - 1) / IQK_PANEL_ROWS * IQK_PANEL_ROWS;
  a->codes = aligned_zeroed((size_t)(rows * a->blocks * IQK_BLOCK_K));
  a->zero = aligned_zeroed((size_t)rows * sizeof(int32_t));
  a->sum = aligned_zeroed((size_t)rows * sizeof(int32_t));
  a->scale = aligned_zeroed((size_t)rows * sizeof(float));
  if (!a->codes || !a->zero || !a->sum || !a->scale) {
    iqk_activations_free(a);
    iqk_fail("out of memory for %lld activation rows of width %lld", (long long)max_m, (long long)k);
    return NULL;
  }
  return a;
}

void iqk_activations_free(iqk_activations_t *activations) {
  if (!activations)
    return;
  free(activations->codes);
  free(activations->zero);
  free(activations->sum);
  free(activations->scale);
  free(activations);
}

static int64_t padded_rows(const iqk_activations_t *a) {
  return (a->m + a->panel_rows - 1) / a->panel_rows * a->panel_rows;
}

/* Clears the rows and sets the layout for m rows. */
static int prepare_rows(iqk_activations_t *a, int64_t m) {
  if (m < 1 || m > a->capacity)
    return iqk_fail("invalid activation row count %lld; the buffer holds 1 to %lld rows",
                (long long)m, (long long)a->capacity);
  a->m = m;
  /* One or two rows take the GEMV kernels, more the GEMM kernel. */
  a->panel_rows = m <= 2 ? m : IQK_PANEL_ROWS;
  int64_t rows = padded_rows(a);
  memset(a->codes, 0, (size_t)(rows * a->blocks * IQK_BLOCK_K));
  memset(a->zero, 0, (size_t)rows * sizeof(int32_t));
  memset(a->sum, 0, (size_t)rows * sizeof(int32_t));
  memset(a->scale, 0, (size_t)rows * sizeof(float));
  return 0;
}

/* Writes one row of codes into the panel layout. */
static void store_row(iqk_activations_t *a, int64_t row, const uint8_t *codes) {
  int64_t panel = row / a->panel_rows, lane = row % a->panel_rows;
  int32_t sum = 0;
  for (int64_t block = 0; block < a->blocks; ++block) {
    uint8_t *destination =
        a->codes + ((panel * a->blocks + block) * a->panel_rows + lane) * IQK_BLOCK_K;
    int64_t begin = block * IQK_BLOCK_K;
    int64_t count = a->k - begin < IQK_BLOCK_K ? a->k - begin : IQK_BLOCK_K;
    memcpy(destination, codes + begin, (size_t)count);
    for (int64_t j = 0; j < count; ++j)
      sum += codes[begin + j];
  }
  a->sum[row] = sum;
}

int iqk_activations_set_codes(iqk_activations_t *activations, int64_t m, const uint8_t *codes,
                              const uint8_t *zero_points, const float *scales) {
  if (!activations || !codes || !zero_points || !scales)
    return iqk_fail("iqk_activations_set_codes: arguments must not be NULL");
  for (int64_t i = 0; i < m * activations->k && m <= activations->capacity; ++i)
    if (codes[i] > 15)
      return iqk_fail("activation code %u at row %lld, k %lld is outside 0..15", codes[i],
                  (long long)(i / activations->k), (long long)(i % activations->k));
  if (prepare_rows(activations, m) != 0)
    return -1;
  for (int64_t r = 0; r < m; ++r) {
    if (zero_points[r] > 15)
      return iqk_fail("activation zero point %u of row %lld is outside 0..15", zero_points[r],
                  (long long)r);
    store_row(activations, r, codes + r * activations->k);
    activations->zero[r] = zero_points[r];
    activations->scale[r] = scales[r];
  }
  return 0;
}

typedef struct quantize_task {
  const kernel_set_t *set;
  iqk_activations_t *a;
  const float *x;
  float *work; /* 2K floats per part */
  int variant;
  int64_t log2m;
  float hscale;
} quantize_task_t;

static void run_quantize_part(void *context, int part, int parts) {
  const quantize_task_t *task = context;
  iqk_activations_t *a = task->a;
  int64_t row_begin = a->m * part / parts, row_end = a->m * (part + 1) / parts;
  if (row_begin == row_end)
    return;
  int64_t rows = padded_rows(a);
  float *work = task->work + (size_t)part * 2 * (size_t)a->k;
  task->set->quantize[task->variant](
      IQK_MEMREF_ARGS((float *)task->x, a->m * a->k),
      IQK_MEMREF_ARGS(a->codes, rows * a->blocks * IQK_BLOCK_K), IQK_MEMREF_ARGS(a->zero, rows),
      IQK_MEMREF_ARGS(a->sum, rows), IQK_MEMREF_ARGS(a->scale, rows),
      IQK_MEMREF_ARGS(work, task->work ? 2 * a->k : 0), a->k, a->blocks, a->panel_rows,
      row_begin, row_end, task->log2m, task->hscale, a->clip);
}

/* Runs quantizer `variant` over the rows on the library's threads. */
static int quantize_rows(iqk_activations_t *a, int64_t m, const float *x, int variant,
                         int64_t log2m) {
  if (!selected)
    return iqk_fail("%s", selection_error[0] ? selection_error : "no kernel set is selected");
  if (!a || !x)
    return iqk_fail("iqk_activations_quantize: arguments must not be NULL");
  if (prepare_rows(a, m) != 0)
    return -1;
  int threads = thread_count < m ? thread_count : (int)m;
  quantize_task_t task = {.set = selected, .a = a, .x = x, .variant = variant, .log2m = log2m,
                          .hscale = (float)(1.0 / sqrt((double)a->k))};
  if (variant > 0) {
    task.work = malloc((size_t)threads * 2 * (size_t)a->k * sizeof(float));
    if (!task.work)
      return iqk_fail("out of memory for the Hadamard work buffers");
  }
  iqk_parallel_run(threads, run_quantize_part, &task);
  free(task.work);
  return 0;
}

int iqk_activations_set_clip(iqk_activations_t *activations, float clip) {
  if (!activations)
    return iqk_fail("iqk_activations_set_clip: activations must not be NULL");
  if (!(clip > 0.0f && clip <= 1.0f))
    return iqk_fail("invalid activation clip factor %g; use a value in (0, 1]", (double)clip);
  activations->clip = clip;
  return 0;
}

int iqk_activations_quantize(iqk_activations_t *activations, int64_t m, const float *x) {
  return quantize_rows(activations, m, x, 0, 0);
}

int iqk_hadamard_factor(int64_t k) {
  static const int factors[] = IQK_HADAMARD_FACTORS;
  for (size_t f = 0; f < sizeof factors / sizeof factors[0]; ++f)
    if (k % factors[f] == 0 && ((k / factors[f]) & (k / factors[f] - 1)) == 0)
      return factors[f];
  if (k > 0 && (k & (k - 1)) == 0)
    return 1;
  return 0;
}

int iqk_activations_quantize_hadamard(iqk_activations_t *activations, int64_t m, const float *x) {
  if (!activations)
    return iqk_fail("iqk_activations_quantize_hadamard: arguments must not be NULL");
  int64_t k = activations->k;
  int factor = iqk_hadamard_factor(k);
  if (factor == 0)
    return iqk_fail("no Hadamard transform of size %lld: use K * 2^m with K in {1, 12, 20, 28, 36, "
                "40, 44, 52, 60, 108, 140, 156, 172}",
                (long long)k);
  static const int factors[] = IQK_HADAMARD_FACTORS;
  int variant = 1;
  for (size_t f = 0; f < sizeof factors / sizeof factors[0]; ++f)
    if (factors[f] == factor)
      variant = 2 + (int)f;
  int64_t log2m = 0;
  while ((INT64_C(1) << log2m) < k / factor)
    log2m++;
  return quantize_rows(activations, m, x, variant, log2m);
}

/* ---- Matrix multiply ---------------------------------------------------------- */

typedef struct matmul_task {
  const kernel_set_t *set;
  const iqk_weights_t *w;
  const iqk_activations_t *a;
  float *y;
  int32_t *partial;
  int64_t partial_count;
  int parts_n; /* parts along N; the rest split the activation panels */
} matmul_task_t;

/* Runs the GEMV kernel (m <= 2) on weight groups [group_begin, group_end). */
static void run_gemv(const kernel_set_t *set, const iqk_weights_t *w, const iqk_activations_t *a,
                     float *y, int64_t group_begin, int64_t group_end) {
  int64_t w_rows = w->groups * IQK_GROUP_ROWS, a_rows = padded_rows(a);
  iqk_gemv_fn *gemv = a->m == 1 ? set->gemv : set->gemv2;
  gemv(IQK_MEMREF_ARGS(w->codes, w->groups * w->blocks * 128), IQK_MEMREF_ARGS(w->zero, w_rows),
       IQK_MEMREF_ARGS(w->sum, w_rows), IQK_MEMREF_ARGS(w->scale, w_rows),
       IQK_MEMREF_ARGS(a->codes, a_rows * a->blocks * IQK_BLOCK_K),
       IQK_MEMREF_ARGS(a->zero, a_rows), IQK_MEMREF_ARGS(a->sum, a_rows),
       IQK_MEMREF_ARGS(a->scale, a_rows), IQK_MEMREF_ARGS(y, a->m * w->n), w->blocks,
       (int32_t)w->k, w->n, group_begin, group_end);
}

static void run_part(void *context, int part, int parts) {
  const matmul_task_t *task = context;
  const iqk_weights_t *w = task->w;
  const iqk_activations_t *a = task->a;
  int parts_n = task->parts_n < parts ? task->parts_n : parts;
  int parts_m = parts / parts_n, part_n = part % parts_n, part_m = part / parts_n;
  if (part_m >= parts_m)
    return;
  int64_t group_begin = w->groups * part_n / parts_n;
  int64_t group_end = w->groups * (part_n + 1) / parts_n;
  int64_t panels = padded_rows(a) / a->panel_rows;
  int64_t panel_begin = panels * part_m / parts_m, panel_end = panels * (part_m + 1) / parts_m;
  if (group_begin == group_end || panel_begin == panel_end)
    return;
  if (a->m <= 2) {
    run_gemv(task->set, w, a, task->y, group_begin, group_end);
  } else {
    int64_t w_rows = w->groups * IQK_GROUP_ROWS, a_rows = padded_rows(a);
    task->set->gemm(IQK_MEMREF_ARGS(w->codes, w->groups * w->blocks * 128),
                    IQK_MEMREF_ARGS(w->zero, w_rows), IQK_MEMREF_ARGS(w->sum, w_rows),
                    IQK_MEMREF_ARGS(w->scale, w_rows),
                    IQK_MEMREF_ARGS(a->codes, a_rows * a->blocks * IQK_BLOCK_K),
                    IQK_MEMREF_ARGS(a->zero, a_rows), IQK_MEMREF_ARGS(a->sum, a_rows),
                    IQK_MEMREF_ARGS(a->scale, a_rows), IQK_MEMREF_ARGS(task->y, a->m * w->n),
                    IQK_MEMREF_ARGS(task->partial, task->partial_count), w->blocks,
                    (int32_t)w->k, w->n, a->m, group_begin, group_end, panel_begin, panel_end);
  }
}

int iqk_matmul(const iqk_weights_t *weights, const iqk_activations_t *activations, float *y) {
  if (!selected)
    return iqk_fail("%s", selection_error[0] ? selection_error : "no kernel set is selected");
  if (!weights || !activations || !y)
    return iqk_fail("iqk_matmul: arguments must not be NULL");
  if (activations->m < 1)
    return iqk_fail("iqk_matmul: the activations hold no rows (quantize or set codes first)");
  if (weights->k != activations->k)
    return iqk_fail("iqk_matmul: the weights have K = %lld but the activations K = %lld",
                (long long)weights->k, (long long)activations->k);
  matmul_task_t task = {.set = selected, .w = weights, .a = activations, .y = y};
  /* Partial sums are needed only when K spans more than one chunk. */
  if (activations->m > 2 && weights->blocks > IQK_CHUNK_BLOCKS) {
    task.partial_count = padded_rows(activations) * weights->n;
    task.partial = malloc((size_t)task.partial_count * sizeof(int32_t));
    if (!task.partial)
      return iqk_fail("out of memory for the [%lld, %lld] partial sums", (long long)activations->m,
                  (long long)weights->n);
  }
  /* Threads split the weight rows, which streams each weight byte once.
   * When there are too few rows for that (fewer than 8 groups per thread)
   * and several activation panels, they split the panels instead. */
  int64_t panels = padded_rows(activations) / activations->panel_rows;
  int threads = thread_count;
  /* A small matrix (an o_proj slice of one head) costs less than waking
   * the pool, so it runs on the calling thread. */
  if (weights->n * weights->k * activations->m < IQK_PARALLEL_MIN_WORK)
    threads = 1;
  task.parts_n = threads;
  if (weights->groups < 8 * (int64_t)threads && panels >= threads)
    task.parts_n = 1;
  else if (weights->groups < threads)
    threads = task.parts_n = (int)weights->groups;
  iqk_parallel_run(threads, run_part, &task);
  free(task.partial);
  return 0;
}

/* One or two activation rows against several weights: the threads split
 * the weights' row groups taken one after another, so the products share
 * one wake-up of the pool. */
typedef struct multi_task {
  const kernel_set_t *set;
  int count;
  const iqk_weights_t *const *w;
  const iqk_activations_t *a;
  float *const *y;
  int64_t total_groups;
} multi_task_t;

static void run_multi_part(void *context, int part, int parts) {
  const multi_task_t *task = context;
  int64_t begin = task->total_groups * part / parts, end = task->total_groups * (part + 1) / parts;
  int64_t offset = 0;
  for (int i = 0; i < task->count && offset < end; ++i) {
    int64_t groups = task->w[i]->groups;
    int64_t first = begin > offset ? begin - offset : 0;
    int64_t last = end - offset < groups ? end - offset : groups;
    if (first < last)
      run_gemv(task->set, task->w[i], task->a, task->y[i], first, last);
    offset += groups;
  }
}

int iqk_matmul_multi(int count, const iqk_weights_t *const *weights,
                     const iqk_activations_t *activations, float *const *y) {
  if (!selected)
    return iqk_fail("%s", selection_error[0] ? selection_error : "no kernel set is selected");
  if (count < 1 || !weights || !activations || !y)
    return iqk_fail("iqk_matmul_multi: needs at least one product and non-NULL arguments");
  if (activations->m < 1)
    return iqk_fail("iqk_matmul_multi: the activations hold no rows (quantize or set codes first)");
  multi_task_t task = {.set = selected, .count = count, .w = weights, .a = activations, .y = y};
  int64_t work = 0;
  for (int i = 0; i < count; ++i) {
    if (!weights[i] || !y[i])
      return iqk_fail("iqk_matmul_multi: product %d has NULL weights or output", i);
    if (weights[i]->k != activations->k)
      return iqk_fail("iqk_matmul_multi: product %d has K = %lld but the activations K = %lld", i,
                      (long long)weights[i]->k, (long long)activations->k);
    task.total_groups += weights[i]->groups;
    work += weights[i]->n * weights[i]->k * activations->m;
  }
  /* The GEMM path splits each product by itself. */
  if (activations->m > 2) {
    for (int i = 0; i < count; ++i)
      if (iqk_matmul(weights[i], activations, y[i]) != 0)
        return -1;
    return 0;
  }
  int threads = work < IQK_PARALLEL_MIN_WORK ? 1 : thread_count;
  if (task.total_groups < threads)
    threads = (int)task.total_groups;
  iqk_parallel_run(threads, run_multi_part, &task);
  return 0;
}
