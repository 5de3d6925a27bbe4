/* Reading statistics files through a read-only mapping, with every size
 * and offset checked against the file before use, and the summary view of
 * `iq-opt --iq-stats-dump`. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "iq/statistics.h"

struct iq_statistics {
  iq_mapped_file_t *file;
  iq_statistics_info_t info;
  const uint8_t *index;
};

static uint32_t get_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static const char *const point_names[IQ_OBSERVE_POINT_COUNT] = {"X", "P", "V", "M", "Z", "H"};

const char *iq_observe_point_name(iq_observe_point_t point) {
  return (unsigned)point < IQ_OBSERVE_POINT_COUNT ? point_names[point] : "?";
}

/* Checks that `count` elements of `element` bytes at `offset` lie inside
 * the file and are aligned for their type. The writer aligns every array
 * to IQ_STATISTICS_ALIGNMENT bytes, which is less than the 128-byte index
 * record, so no section needs more alignment than that. */
static bool section_ok(const iq_statistics_t *s, uint64_t offset, uint64_t count,
                       uint64_t element) {
  uint64_t bytes;
  uint64_t alignment = element < IQ_STATISTICS_ALIGNMENT ? element : IQ_STATISTICS_ALIGNMENT;
  return iq_mul_u64(count, element, &bytes) && iq_range_in_bounds(offset, bytes, s->file->size) &&
         offset % alignment == 0;
}

static bool invalid(iq_error_t **error, const char *path, const char *format, uint64_t a,
                    uint64_t b) {
  char message[256];
  snprintf(message, sizeof message, format, (unsigned long long)a, (unsigned long long)b);
  return iq_error_set(error, path, NULL, "recalibrate to write a new statistics file",
                      "invalid statistics file: %s", message);
}

/* Validates entry `i` so later accessors can trust it. */
static bool check_entry(const iq_statistics_t *s, uint32_t i, const char *path, iq_error_t **error) {
  const uint8_t *entry = s->index + (size_t)i * IQ_STATISTICS_ENTRY_SIZE;
  uint64_t c = get_u32(entry + 8), rows = get_u32(entry + 12), n = get_u64(entry + 16);
  if (get_u32(entry + 0) > s->info.layers || get_u32(entry + 4) >= IQ_OBSERVE_POINT_COUNT)
    return invalid(error, path, "entry %llu names layer or point %llu, which does not exist", i,
                   get_u32(entry + 4));
  if (n != s->info.token_count || rows > n || c == 0)
    return invalid(error, path, "entry %llu has inconsistent sizes (%llu tokens)", i, n);
  const uint64_t counts[IQ_STATS_SECTION_COUNT] = {c, c, c, n, n, n, s->info.windows,
                                                   s->info.windows, c * c, rows * c, rows, rows};
  const uint64_t sizes[IQ_STATS_SECTION_COUNT] = {4, 4, 4, 4, 4, 4, 8, 8, 8, 4, 4, 4};
  if (c > (1u << 24))
    return invalid(error, path, "entry %llu has %llu channels", i, c);
  for (int k = 0; k < IQ_STATS_SECTION_COUNT; ++k)
    if (!section_ok(s, get_u64(entry + 24 + 8 * k), counts[k], sizes[k]))
      return invalid(error, path, "entry %llu: section %llu lies outside the file", i,
                     (uint64_t)k);
  return true;
}

iq_statistics_t *iq_statistics_open(const char *path, iq_error_t **error) {
  iq_mapped_file_t *file = iq_mapped_file_open(path, error);
  if (!file)
    return NULL;
  iq_statistics_t *s = calloc(1, sizeof *s);
  if (!s) {
    iq_mapped_file_close(file);
    iq_error_set(error, path, NULL, NULL, "out of memory");
    return NULL;
  }
  s->file = file;
  const uint8_t *h = file->data;
  bool ok = true;
  if (file->size < IQ_STATISTICS_HEADER_SIZE || memcmp(h, IQ_STATISTICS_MAGIC, 8) != 0) {
    ok = iq_error_set(error, path, NULL,
                      "pass a file written by iq-opt --iq-calibrate or iq-compile --calibration",
                      "not a statistics file (no IQSTATS header)");
  } else if (get_u32(h + 8) != IQ_STATISTICS_VERSION) {
    ok = iq_error_set(error, path, NULL, "recalibrate with this version of iq",
                      "statistics file version %u is not supported (expected %d)",
                      get_u32(h + 8), IQ_STATISTICS_VERSION);
  }
  if (ok) {
    s->info.layers = get_u32(h + 16);
    s->info.windows = get_u32(h + 20);
    s->info.window_length = get_u32(h + 24);
    s->info.entry_count = get_u32(h + 28);
    s->info.seed = get_u64(h + 32);
    s->info.skip_tokens = get_u64(h + 40);
    s->info.token_count = get_u64(h + 48);
    uint64_t windows_offset = get_u64(h + 56), index_offset = get_u64(h + 64);
    uint64_t tokens_offset = get_u64(h + 80);
    if (get_u64(h + 72) != file->size)
      ok = invalid(error, path, "the header records %llu bytes but the file has %llu",
                   get_u64(h + 72), file->size);
    else if ((uint64_t)s->info.windows * s->info.window_length != s->info.token_count)
      ok = invalid(error, path, "%llu windows do not make %llu tokens", s->info.windows,
                   s->info.token_count);
    else if (!section_ok(s, windows_offset, s->info.windows, 8) ||
             !section_ok(s, tokens_offset, s->info.token_count, 4) ||
             !section_ok(s, index_offset, s->info.entry_count, IQ_STATISTICS_ENTRY_SIZE))
      ok = invalid(error, path, "the window table or index (%llu entries at %llu) lies outside "
                   "the file", s->info.entry_count, index_offset);
    if (ok) {
      s->info.window_starts = (const uint64_t *)(file->data + windows_offset);
      s->info.window_tokens = (const int32_t *)(file->data + tokens_offset);
      s->index = file->data + index_offset;
    }
  }
  for (uint32_t i = 0; ok && i < s->info.entry_count; ++i)
    ok = check_entry(s, i, path, error);
  if (!ok) {
    iq_statistics_close(s);
    return NULL;
  }
  return s;
}

void iq_statistics_close(iq_statistics_t *s) {
  if (!s)
    return;
  iq_mapped_file_close(s->file);
  free(s);
}

const iq_statistics_info_t *iq_statistics_get_info(const iq_statistics_t *s) { return &s->info; }

bool iq_statistics_get(const iq_statistics_t *s, uint32_t index, iq_statistics_point_t *out) {
  if (index >= s->info.entry_count)
    return false;
  const uint8_t *entry = s->index + (size_t)index * IQ_STATISTICS_ENTRY_SIZE;
  const uint8_t *base = s->file->data;
#define SECTION(type, k) ((const type *)(base + get_u64(entry + 24 + 8 * (k))))
  *out = (iq_statistics_point_t){
      .layer = get_u32(entry + 0),
      .point = (iq_observe_point_t)get_u32(entry + 4),
      .channels = get_u32(entry + 8),
      .sample_rows = get_u32(entry + 12),
      .token_count = get_u64(entry + 16),
      .channel_min = SECTION(float, IQ_STATS_CHANNEL_MIN),
      .channel_max = SECTION(float, IQ_STATS_CHANNEL_MAX),
      .channel_absmax = SECTION(float, IQ_STATS_CHANNEL_ABSMAX),
      .token_min = SECTION(float, IQ_STATS_TOKEN_MIN),
      .token_max = SECTION(float, IQ_STATS_TOKEN_MAX),
      .token_outlier = SECTION(float, IQ_STATS_TOKEN_OUTLIER),
      .window_mean = SECTION(double, IQ_STATS_WINDOW_MEAN),
      .window_std = SECTION(double, IQ_STATS_WINDOW_STD),
      .xtx = SECTION(double, IQ_STATS_XTX),
      .samples = SECTION(float, IQ_STATS_SAMPLES),
      .sample_window = SECTION(uint32_t, IQ_STATS_SAMPLE_WINDOW),
      .sample_position = SECTION(uint32_t, IQ_STATS_SAMPLE_POSITION),
  };
#undef SECTION
  return true;
}

bool iq_statistics_find(const iq_statistics_t *s, uint32_t layer, iq_observe_point_t point,
                        iq_statistics_point_t *out) {
  for (uint32_t i = 0; i < s->info.entry_count; ++i) {
    const uint8_t *entry = s->index + (size_t)i * IQ_STATISTICS_ENTRY_SIZE;
    if (get_u32(entry) == layer && get_u32(entry + 4) == (uint32_t)point)
      return iq_statistics_get(s, i, out);
  }
  return false;
}

/* ---- Dump ------------------------------------------------------------------ */

/* The fraction of tokens whose outlier measure exceeds `k` standard
 * deviations: the per-sample outlier rate of InfoQuant's token selection
 * at level k. */
static double outlier_fraction(const iq_statistics_point_t *p, double k) {
  uint64_t count = 0;
  for (uint64_t n = 0; n < p->token_count; ++n)
    count += p->token_outlier[n] > k;
  return p->token_count ? (double)count / (double)p->token_count : 0.0;
}

bool iq_statistics_dump(const char *path, FILE *out, const char *csv_path, iq_error_t **error) {
  iq_statistics_t *s = iq_statistics_open(path, error);
  if (!s)
    return false;
  const iq_statistics_info_t *info = &s->info;
  fprintf(out, "statistics: %u layers, %u windows of %u tokens (%llu tokens), seed %llu, skip %llu\n",
          info->layers, info->windows, info->window_length, (unsigned long long)info->token_count,
          (unsigned long long)info->seed, (unsigned long long)info->skip_tokens);
  fprintf(out, "%5s %5s %8s %12s %12s %12s %10s %10s %8s\n", "layer", "point", "channels", "min",
          "max", "absmax", "trace/N", "outl>4std", "samples");

  FILE *csv = NULL;
  if (csv_path) {
    csv = fopen(csv_path, "w");
    if (!csv) {
      iq_error_set(error, csv_path, NULL, "check the folder's permissions",
                   "cannot create the CSV file: %s", strerror(errno));
      iq_statistics_close(s);
      return false;
    }
    fputs("layer,point,channel,min,max,absmax,xtx_diagonal_mean\n", csv);
  }
  for (uint32_t i = 0; i < info->entry_count; ++i) {
    iq_statistics_point_t p;
    iq_statistics_get(s, i, &p);
    float low = p.channel_min[0], high = p.channel_max[0], peak = 0.0f;
    double trace = 0.0;
    for (uint32_t c = 0; c < p.channels; ++c) {
      low = p.channel_min[c] < low ? p.channel_min[c] : low;
      high = p.channel_max[c] > high ? p.channel_max[c] : high;
      peak = p.channel_absmax[c] > peak ? p.channel_absmax[c] : peak;
      trace += p.xtx[(size_t)c * p.channels + c];
      if (csv)
        fprintf(csv, "%u,%s,%u,%.9g,%.9g,%.9g,%.9g\n", p.layer, iq_observe_point_name(p.point), c,
                p.channel_min[c], p.channel_max[c], p.channel_absmax[c],
                p.xtx[(size_t)c * p.channels + c] / (double)p.token_count);
    }
    fprintf(out, "%5u %5s %8u %12.5g %12.5g %12.5g %10.4g %10.4f %8u\n", p.layer,
            iq_observe_point_name(p.point), p.channels, low, high, peak,
            trace / (double)p.token_count, outlier_fraction(&p, 4.0), p.sample_rows);
  }
  bool ok = true;
  if (csv && fclose(csv) != 0)
    ok = iq_error_set(error, csv_path, NULL, NULL, "cannot write the CSV file: %s",
                      strerror(errno));
  iq_statistics_close(s);
  return ok;
}
