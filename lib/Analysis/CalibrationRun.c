/* The calibration run: text to windows, windows through the instrumented
 * library, and the budgeted passes that stream statistics to the file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "calibration_internal.h"
#include "statistics_internal.h"
#include "tokenizer.h"

#define MIB (1024.0 * 1024.0)

/* ---- Options and text ------------------------------------------------------ */

bool iq_calibration_check_options(const iq_calibration_options_t *o,
                                  const iq_calibration_model_t *model, iq_error_t **error) {
  if (o->windows < 1 || o->windows > (1 << 20))
    return iq_error_set(error, NULL, "windows", "use 1 to 1048576 windows",
                        "invalid window count %lld", (long long)o->windows);
  if (o->window_length < 1 || o->window_length > (1 << 20))
    return iq_error_set(error, NULL, "length", "use 1 to 1048576 tokens per window",
                        "invalid window length %lld", (long long)o->window_length);
  int64_t context = o->max_context > 0 ? o->max_context : model->max_positions;
  if (context > 0 && o->window_length > context)
    return iq_error_set(error, NULL, "length", "use windows of at most the model's context",
                        "windows of %lld tokens are longer than the model's context of %lld "
                        "tokens",
                        (long long)o->window_length, (long long)context);
  if ((uint64_t)o->windows * (uint64_t)o->window_length > UINT32_MAX)
    return iq_error_set(error, NULL, "windows", "use fewer or shorter windows",
                        "%lld windows of %lld tokens exceed 2^32 tokens", (long long)o->windows,
                        (long long)o->window_length);
  if (o->sample_rows < 0 || o->budget_mib < 1 || o->skip_tokens < 0)
    return iq_error_set(error, NULL, "iq-calibrate", NULL,
                        "sample rows and skipped tokens must be at least 0, the budget at least "
                        "1 MiB");
  return true;
}

bool iq_calibration_tokenize(const iq_calibration_options_t *o, const iq_calibration_model_t *model,
                             int32_t **tokens, size_t *count, iq_error_t **error) {
  size_t size = 0;
  char *text = iq_read_text_file(o->text_path, &size, error);
  if (!text)
    return false;
  size_t printable = 0;
  for (size_t i = 0; i < size; ++i)
    printable += text[i] != ' ' && text[i] != '\n' && text[i] != '\r' && text[i] != '\t';
  if (printable == 0) {
    free(text);
    return iq_error_set(error, o->text_path, NULL, "pass a file with calibration text",
                        "the calibration text is empty");
  }
  if (strlen(text) != size) {
    free(text);
    return iq_error_set(error, o->text_path, NULL, "pass a UTF-8 text file",
                        "the calibration text contains a NUL byte");
  }

  tokenizer_t *tokenizer = tokenizer_load(o->tokenizer_path, error);
  if (!tokenizer) {
    free(text);
    return false;
  }
  bool ok = true;
  if (tokenizer->vocab_size != model->vocab)
    ok = iq_error_set(error, o->tokenizer_path, NULL, "pass the tokenizer the model was trained with",
                      "the tokenizer has %d tokens but the model's vocabulary has %lld: they do "
                      "not belong together",
                      tokenizer->vocab_size, (long long)model->vocab);
  if (ok) {
    iq_progress_t *progress = iq_progress_start("tokenize", 1, "texts", stderr, false);
    ok = tokenizer_encode(tokenizer, text, tokenizer->add_bos, tokens, count, error);
    iq_progress_update(progress, 1);
    iq_progress_finish(progress);
  }
  for (size_t i = 0; ok && i < *count; ++i) {
    if ((*tokens)[i] < 0 || (*tokens)[i] >= model->vocab)
      ok = iq_error_set(error, o->tokenizer_path, NULL, "pass the tokenizer the model was trained with",
                        "token id %d at index %zu is outside the model's vocabulary of %lld",
                        (*tokens)[i], i, (long long)model->vocab);
  }
  if (!ok && *tokens) {
    free(*tokens);
    *tokens = NULL;
  }
  tokenizer_free(tokenizer);
  free(text);
  return ok;
}

/* ---- Deterministic choices ---------------------------------------------------- */

/* SplitMix64 (Steele, Lea and Flood, 2014): a small generator whose
 * output depends only on the seed, on every platform. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Picks `count` distinct values of 0 .. range-1 with a partial
 * Fisher-Yates shuffle and returns them ascending in a new array. */
static uint64_t *choose_sorted(uint64_t range, uint64_t count, uint64_t *state) {
  uint64_t *values = malloc((range ? range : 1) * sizeof *values);
  if (!values)
    return NULL;
  for (uint64_t i = 0; i < range; ++i)
    values[i] = i;
  for (uint64_t i = 0; i < count && i + 1 < range; ++i) {
    uint64_t j = i + next_random(state) % (range - i);
    uint64_t swap = values[i];
    values[i] = values[j];
    values[j] = swap;
  }
  qsort(values, count, sizeof *values, compare_u64);
  return values;
}

/* ---- Memory ------------------------------------------------------------------- */

/* Reads a "Name:   N kB" line of /proc/self/status; -1 when unavailable. */
static long long status_kib(const char *name) {
  FILE *status = fopen("/proc/self/status", "r");
  if (!status)
    return -1;
  char line[256];
  long long value = -1;
  size_t length = strlen(name);
  while (fgets(line, sizeof line, status))
    if (strncmp(line, name, length) == 0 && line[length] == ':')
      value = strtoll(line + length + 1, NULL, 10);
  fclose(status);
  return value;
}

/* Resets the peak resident size (VmHWM) to the current one; Linux 4.0
 * and later. Returns false when the kernel does not allow it. */
static bool reset_peak_rss(void) {
  int fd = open("/proc/self/clear_refs", O_WRONLY);
  if (fd < 0)
    return false;
  bool ok = write(fd, "5", 1) == 1;
  close(fd);
  return ok;
}

/* ---- The run --------------------------------------------------------------------- */

/* A unit of the layer grouping: a decoder layer (X, P, V, M, Z) or the
 * lm_head input (H, unit == layers). */
typedef struct run_state {
  const iq_calibration_library_t *lib;
  const iq_calibration_model_t *model;
  iq_run_shape_t shape;
  uint32_t units;
  iq_point_accumulator_t *accumulators; /* [units * IQ_OBSERVE_POINT_COUNT] */
  uint32_t first_unit, end_unit;        /* the group of this pass */
  uint32_t window;
  double *scratch;
  char failure[256];
} run_state_t;

static bool unit_has_point(const run_state_t *r, uint32_t unit, int point) {
  return unit == r->model->layers ? point == IQ_OBSERVE_H : point != IQ_OBSERVE_H;
}

static uint64_t unit_bytes(const run_state_t *r, uint32_t unit) {
  uint64_t bytes = 0;
  for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p)
    if (unit_has_point(r, unit, p))
      bytes += iq_accumulator_bytes(&r->shape, iq_calibration_channels(r->model, p));
  return bytes;
}

static void observe(void *user_data, uint64_t id, const float *data, int64_t rows, int64_t cols) {
  run_state_t *r = user_data;
  uint64_t unit = id / IQ_OBSERVE_POINT_COUNT;
  int point = (int)(id % IQ_OBSERVE_POINT_COUNT);
  if (unit < r->first_unit || unit >= r->end_unit || r->failure[0])
    return;
  iq_point_accumulator_t *a = &r->accumulators[unit * IQ_OBSERVE_POINT_COUNT + (uint64_t)point];
  if (!a->xtx) {
    snprintf(r->failure, sizeof r->failure, "unexpected observer %s of layer %llu",
             iq_observe_point_name((iq_observe_point_t)point), (unsigned long long)unit);
    return;
  }
  if (rows != r->shape.window_length || cols != a->channels) {
    snprintf(r->failure, sizeof r->failure,
             "observer %s of layer %llu sent [%lld, %lld], expected [%u, %u]",
             iq_observe_point_name((iq_observe_point_t)point), (unsigned long long)unit,
             (long long)rows, (long long)cols, r->shape.window_length, a->channels);
    return;
  }
  iq_accumulator_add_window(a, r->window, data, r->scratch);
}

static bool forward_window(run_state_t *r, iq_session_t *session, const int32_t *window_tokens,
                           float *logits, iq_error_t **error) {
  iq_status_t status = r->lib->session_reset(session);
  if (status == IQ_OK)
    status = r->lib->session_forward(session, window_tokens, (int32_t)r->shape.window_length, 0,
                                     logits, 0);
  if (status != IQ_OK)
    return iq_error_set(error, NULL, "iq_session_forward", NULL, "the forward pass failed: %s",
                        r->lib->last_error());
  if (r->failure[0])
    return iq_error_set(error, NULL, "iq-calibrate", "this is a bug in iq; please report it", "%s",
                        r->failure);
  return true;
}

/* Allocates the accumulators of units [first, end). */
static bool allocate_group(run_state_t *r, uint32_t first, uint32_t end, iq_error_t **error) {
  for (uint32_t u = first; u < end; ++u) {
    for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p) {
      if (!unit_has_point(r, u, p))
        continue;
      iq_point_accumulator_t *a = &r->accumulators[u * IQ_OBSERVE_POINT_COUNT + p];
      *a = (iq_point_accumulator_t){.layer = u, .point = (uint32_t)p,
                                    .channels = iq_calibration_channels(r->model, p),
                                    .shape = &r->shape};
      if (!iq_accumulator_init(a))
        return iq_error_set(error, NULL, "iq-calibrate", "lower budget-mib or sample-rows",
                            "out of memory for the statistics of layer %u", u);
    }
  }
  return true;
}

static void free_group(run_state_t *r, uint32_t first, uint32_t end) {
  for (uint32_t u = first; u < end; ++u)
    for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p)
      iq_accumulator_free(&r->accumulators[u * IQ_OBSERVE_POINT_COUNT + p]);
}

/* Writes the group's finished entries in (layer, point) order. A unit
 * whose observers never ran (a model without lm_head) is left out. */
static bool write_group(run_state_t *r, iq_statistics_writer_t *writer, uint32_t first,
                        uint32_t end, iq_error_t **error) {
  for (uint32_t u = first; u < end; ++u) {
    for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p) {
      iq_point_accumulator_t *a = &r->accumulators[u * IQ_OBSERVE_POINT_COUNT + p];
      if (!a->xtx || a->windows_seen == 0)
        continue;
      if (a->windows_seen != r->shape.windows)
        return iq_error_set(error, NULL, "iq-calibrate", "this is a bug in iq; please report it",
                            "observer %s of layer %u ran for %u of %u windows",
                            iq_observe_point_name((iq_observe_point_t)p), u, a->windows_seen,
                            r->shape.windows);
      iq_accumulator_finish(a);
      if (!iq_statistics_writer_add(writer, a, error))
        return false;
    }
  }
  return true;
}

/* Splits the units into consecutive groups whose accumulators fit the
 * budget. Returns the number of passes, or 0 when one unit alone does not
 * fit. `group_ends[k]` is the end of group k. */
static uint32_t plan_groups(const run_state_t *r, uint64_t budget, uint32_t *group_ends,
                            uint32_t *too_large) {
  uint32_t groups = 0;
  uint64_t used = 0;
  for (uint32_t u = 0; u < r->units; ++u) {
    uint64_t bytes = unit_bytes(r, u);
    if (bytes > budget) {
      *too_large = u;
      return 0;
    }
    if (used + bytes > budget) {
      group_ends[groups++] = u;
      used = 0;
    }
    used += bytes;
  }
  group_ends[groups++] = r->units;
  return groups;
}

bool iq_calibration_run(const iq_calibration_library_t *lib, const iq_calibration_model_t *model,
                        const iq_calibration_options_t *o, const int32_t *tokens,
                        size_t token_count, iq_error_t **error) {
  uint64_t length = (uint64_t)o->window_length, windows = (uint64_t)o->windows;
  uint64_t skip = (uint64_t)o->skip_tokens;
  uint64_t slots = token_count > skip ? (token_count - skip) / length : 0;
  if (slots < windows)
    return iq_error_set(error, o->text_path, NULL,
                        "use more text, fewer or shorter windows, or fewer skipped tokens",
                        "the text has %zu tokens; after skipping %llu it holds %llu windows of "
                        "%llu tokens, not the %llu requested",
                        token_count, (unsigned long long)skip, (unsigned long long)slots,
                        (unsigned long long)length, (unsigned long long)windows);

  /* Windows are distinct, non-overlapping slots of `length` tokens after
   * the skipped part, chosen at random from the seed and run in text
   * order. Sampled rows are distinct tokens of those windows. */
  uint64_t state = o->seed;
  uint64_t *chosen_slots = choose_sorted(slots, windows, &state);
  uint64_t total = windows * length;
  uint64_t rows = (uint64_t)o->sample_rows < total ? (uint64_t)o->sample_rows : total;
  uint64_t *samples = chosen_slots ? choose_sorted(total, rows, &state) : NULL;
  uint64_t *window_starts = malloc(windows * sizeof *window_starts);
  run_state_t r = {.lib = lib, .model = model, .units = (uint32_t)model->layers + 1};
  r.shape = (iq_run_shape_t){.windows = (uint32_t)windows, .window_length = (uint32_t)length,
                             .token_count = total, .sample_rows = (uint32_t)rows,
                             .sample_tokens = samples};
  uint32_t max_channels = 0;
  for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p)
    if (iq_calibration_channels(model, p) > max_channels)
      max_channels = iq_calibration_channels(model, p);
  r.scratch = malloc(length * max_channels * sizeof(double));
  r.accumulators = calloc((size_t)r.units * IQ_OBSERVE_POINT_COUNT, sizeof *r.accumulators);
  uint32_t *group_ends = calloc(r.units, sizeof *group_ends);
  float *logits = malloc(length * (uint64_t)model->vocab * sizeof(float));
  bool ok = chosen_slots && samples && window_starts && r.scratch && r.accumulators &&
            group_ends && logits;
  if (!ok)
    iq_error_set(error, NULL, "iq-calibrate", "use fewer or shorter windows",
                 "out of memory for %llu windows of %llu tokens", (unsigned long long)windows,
                 (unsigned long long)length);
  for (uint64_t w = 0; ok && w < windows; ++w)
    window_starts[w] = skip + chosen_slots[w] * length;
  int32_t *window_tokens = ok ? malloc(total * sizeof *window_tokens) : NULL;
  if (ok && !window_tokens)
    ok = iq_error_set(error, NULL, "iq-calibrate", "use fewer or shorter windows",
                      "out of memory for %llu tokens", (unsigned long long)total);
  for (uint64_t w = 0; ok && w < windows; ++w)
    memcpy(window_tokens + w * length, tokens + window_starts[w], length * sizeof *window_tokens);

  /* The budget bounds the accumulators, the window's scratch copy and a
   * reserve for the buffers the forward pass allocates while observers
   * run: four hidden-wide, three FFN-wide and two attention-wide
   * activations of the window. NOTE: the reserve is an estimate that
   * covers malloc's varying reuse of those buffers in the tests; the
   * measured growth is logged so a run can be checked. */
  uint64_t budget = (uint64_t)o->budget_mib << 20;
  uint64_t forward_reserve =
      length * sizeof(float) *
      (uint64_t)(4 * model->hidden + 3 * model->ffn + 2 * model->heads * model->head_dim);
  uint64_t scratch_bytes = length * max_channels * sizeof(double) + forward_reserve;
  uint32_t too_large = 0, passes = 0;
  if (ok) {
    passes = budget > scratch_bytes ? plan_groups(&r, budget - scratch_bytes, group_ends, &too_large)
                                    : 0;
    if (passes == 0)
      ok = iq_error_set(error, NULL, "budget-mib",
                        "raise the budget, or lower sample-rows or the window count",
                        "a budget of %lld MiB cannot hold the statistics of layer %u (%.1f MiB, "
                        "plus %.1f MiB of scratch and forward buffers)",
                        (long long)o->budget_mib, too_large,
                        (double)unit_bytes(&r, too_large) / MIB, (double)scratch_bytes / MIB);
  }

  iq_model_t *handle = NULL;
  iq_session_t *session = NULL;
  if (ok) {
    iq_model_options_t model_options = {.struct_size = sizeof model_options, .num_threads = 0};
    iq_status_t status = lib->model_open(model->weight_path, &model_options, &handle);
    if (status == IQ_OK)
      status = lib->session_create(handle, (int32_t)length, &session);
    if (status != IQ_OK)
      ok = iq_error_set(error, model->weight_path, NULL, NULL, "cannot run the model: %s",
                        lib->last_error());
  }

  /* A first window without observers maps the weights and sizes the
   * buffers. Its peak resident size is the baseline, so the growth
   * measured afterwards is the statistics' and not the forward pass's. */
  bool peak_reset = ok && reset_peak_rss();
  ok = ok && forward_window(&r, session, tokens + window_starts[0], logits, error);
  long long baseline_kib = status_kib("VmHWM");
  peak_reset = peak_reset && ok && reset_peak_rss();

  iq_statistics_info_t info = {.layers = (uint32_t)model->layers, .windows = (uint32_t)windows,
                               .window_length = (uint32_t)length, .seed = o->seed,
                               .skip_tokens = skip, .token_count = total,
                               .window_starts = window_starts,
                               .window_tokens = window_tokens};
  iq_statistics_writer_t *writer = ok ? iq_statistics_writer_open(o->output_path, &info, error) : NULL;
  ok = ok && writer;
  lib->set_observer(observe, &r);
  iq_progress_t *progress =
      ok ? iq_progress_start("calibration", passes * total, "tokens", stderr, false) : NULL;
  struct timespec started;
  clock_gettime(CLOCK_MONOTONIC, &started);
  uint32_t first = 0;
  for (uint32_t pass = 0; ok && pass < passes; ++pass) {
    r.first_unit = first;
    r.end_unit = group_ends[pass];
    iq_log(IQ_LOG_INFO, "calibration pass %u of %u: layers %u to %u", pass + 1, passes, first,
           r.end_unit - 1);
    ok = allocate_group(&r, r.first_unit, r.end_unit, error);
    for (uint64_t w = 0; ok && w < windows; ++w) {
      r.window = (uint32_t)w;
      ok = forward_window(&r, session, tokens + window_starts[w], logits, error);
      iq_progress_advance(progress, length);
    }
    ok = ok && write_group(&r, writer, r.first_unit, r.end_unit, error);
    free_group(&r, r.first_unit, r.end_unit);
    first = r.end_unit;
  }
  lib->set_observer(NULL, NULL);
  if (progress)
    iq_progress_finish(progress);
  if (ok) {
    ok = iq_statistics_writer_commit(writer, error);
    writer = NULL;
  }
  iq_statistics_writer_abort(writer);

  long long peak_kib = status_kib("VmHWM");
  struct timespec finished;
  clock_gettime(CLOCK_MONOTONIC, &finished);
  double seconds = (double)(finished.tv_sec - started.tv_sec) +
                   (double)(finished.tv_nsec - started.tv_nsec) * 1e-9;
  if (ok)
    iq_log(IQ_LOG_INFO, "calibration: %llu windows x %u passes in %.1f s, %.0f tokens/s",
           (unsigned long long)windows, passes, seconds,
           seconds > 0 ? (double)(passes * total) / seconds : 0.0);
  if (ok) {
    if (peak_reset && peak_kib >= 0 && baseline_kib >= 0)
      iq_log(IQ_LOG_INFO,
             "calibration: wrote %s: %lld layers, %llu windows of %llu tokens, %u passes, peak "
             "memory growth %.1f MiB (budget %lld MiB)",
             o->output_path, (long long)model->layers, (unsigned long long)windows,
             (unsigned long long)length, passes, (double)(peak_kib - baseline_kib) / 1024.0,
             (long long)o->budget_mib);
    else
      iq_log(IQ_LOG_INFO, "calibration: wrote %s in %u passes (peak memory not measurable here)",
             o->output_path, passes);
  }

  if (session)
    lib->session_destroy(session);
  if (handle)
    lib->model_close(handle);
  if (r.accumulators)
    free_group(&r, 0, r.units);
  free(r.accumulators);
  free(r.scratch);
  free(group_ends);
  free(logits);
  free(window_starts);
  free(window_tokens);
  free(samples);
  free(chosen_slots);
  return ok;
}
