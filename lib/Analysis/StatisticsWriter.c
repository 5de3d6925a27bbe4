/* Streaming writer of statistics files: the header is reserved, entries
 * are appended as each group of layers finishes, and the index and the
 * header are written last. The file is built under a temporary name and
 * renamed into place, so a failed run leaves no partial file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statistics_internal.h"

struct iq_statistics_writer {
  int fd;
  char *path;
  char *temporary_path;
  uint64_t offset; /* bytes written so far */
  iq_statistics_info_t info;
  uint8_t *entries; /* entry_count * IQ_STATISTICS_ENTRY_SIZE bytes */
  uint32_t entry_count;
  uint64_t tokens_offset; /* of the window token table */
};

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof v); }

static bool write_failed(iq_statistics_writer_t *w, iq_error_t **error) {
  return iq_error_set(error, w->path, NULL, "check the free space and the folder's permissions",
                      "cannot write the statistics file: %s", strerror(errno));
}

/* Appends `size` bytes, then zeros up to the next alignment boundary. */
static bool append(iq_statistics_writer_t *w, const void *data, uint64_t size, uint64_t *offset,
                   iq_error_t **error) {
  static const uint8_t zeros[IQ_STATISTICS_ALIGNMENT];
  *offset = w->offset;
  if (size > 0 && !iq_write_all(w->fd, data, size))
    return write_failed(w, error);
  w->offset += size;
  uint64_t padding = (IQ_STATISTICS_ALIGNMENT - w->offset % IQ_STATISTICS_ALIGNMENT) %
                     IQ_STATISTICS_ALIGNMENT;
  if (padding > 0 && !iq_write_all(w->fd, zeros, padding))
    return write_failed(w, error);
  w->offset += padding;
  return true;
}

iq_statistics_writer_t *iq_statistics_writer_open(const char *path, const iq_statistics_info_t *info,
                                                  iq_error_t **error) {
  iq_statistics_writer_t *w = calloc(1, sizeof *w);
  size_t length = strlen(path);
  if (w) {
    w->path = strdup(path);
    w->temporary_path = malloc(length + 16);
  }
  if (!w || !w->path || !w->temporary_path) {
    if (w) {
      free(w->path);
      free(w->temporary_path);
    }
    free(w);
    iq_error_set(error, path, NULL, NULL, "out of memory");
    return NULL;
  }
  snprintf(w->temporary_path, length + 16, "%s.tmp.XXXXXX", path);
  w->fd = mkstemp(w->temporary_path);
  if (w->fd < 0) {
    iq_error_set(error, path, NULL, "check that the folder exists and is writable",
                 "cannot create the statistics file: %s", strerror(errno));
    free(w->path);
    free(w->temporary_path);
    free(w);
    return NULL;
  }
  fchmod(w->fd, 0644);
  w->info = *info;
  w->info.window_starts = NULL;
  w->info.window_tokens = NULL;

  /* The header is written last; its space is reserved here. */
  uint8_t header[IQ_STATISTICS_HEADER_SIZE] = {0};
  uint64_t ignored;
  if (!append(w, header, sizeof header, &ignored, error) ||
      !append(w, info->window_starts, (uint64_t)info->windows * sizeof(uint64_t), &ignored,
              error) ||
      !append(w, info->window_tokens, info->token_count * sizeof(int32_t), &w->tokens_offset,
              error)) {
    iq_statistics_writer_abort(w);
    return NULL;
  }
  return w;
}

bool iq_statistics_writer_add(iq_statistics_writer_t *w, const iq_point_accumulator_t *a,
                              iq_error_t **error) {
  uint8_t *grown = realloc(w->entries, (size_t)(w->entry_count + 1) * IQ_STATISTICS_ENTRY_SIZE);
  if (!grown)
    return iq_error_set(error, w->path, NULL, NULL, "out of memory");
  w->entries = grown;
  uint8_t *entry = w->entries + (size_t)w->entry_count * IQ_STATISTICS_ENTRY_SIZE;
  memset(entry, 0, IQ_STATISTICS_ENTRY_SIZE);

  const iq_run_shape_t *shape = a->shape;
  uint64_t c = a->channels, n = shape->token_count, rows = shape->sample_rows;
  struct {
    const void *data;
    uint64_t size;
  } sections[IQ_STATS_SECTION_COUNT] = {
      [IQ_STATS_CHANNEL_MIN] = {a->channel_min, c * sizeof(float)},
      [IQ_STATS_CHANNEL_MAX] = {a->channel_max, c * sizeof(float)},
      [IQ_STATS_CHANNEL_ABSMAX] = {a->channel_absmax, c * sizeof(float)},
      [IQ_STATS_TOKEN_MIN] = {a->token_min, n * sizeof(float)},
      [IQ_STATS_TOKEN_MAX] = {a->token_max, n * sizeof(float)},
      [IQ_STATS_TOKEN_OUTLIER] = {a->token_outlier, n * sizeof(float)},
      [IQ_STATS_WINDOW_MEAN] = {a->window_mean, (uint64_t)shape->windows * sizeof(double)},
      [IQ_STATS_WINDOW_STD] = {a->window_std, (uint64_t)shape->windows * sizeof(double)},
      [IQ_STATS_XTX] = {a->xtx, c * c * sizeof(double)},
      [IQ_STATS_SAMPLES] = {a->samples, rows * c * sizeof(float)},
      [IQ_STATS_SAMPLE_WINDOW] = {a->sample_window, rows * sizeof(uint32_t)},
      [IQ_STATS_SAMPLE_POSITION] = {a->sample_position, rows * sizeof(uint32_t)},
  };
  put_u32(entry + 0, a->layer);
  put_u32(entry + 4, a->point);
  put_u32(entry + 8, a->channels);
  put_u32(entry + 12, shape->sample_rows);
  put_u64(entry + 16, n);
  for (int s = 0; s < IQ_STATS_SECTION_COUNT; ++s) {
    uint64_t offset;
    if (!append(w, sections[s].data, sections[s].size, &offset, error))
      return false;
    put_u64(entry + 24 + 8 * s, offset);
  }
  w->entry_count++;
  return true;
}

bool iq_statistics_writer_commit(iq_statistics_writer_t *w, iq_error_t **error) {
  uint64_t index_offset;
  bool ok = append(w, w->entries, (uint64_t)w->entry_count * IQ_STATISTICS_ENTRY_SIZE,
                   &index_offset, error);

  uint8_t header[IQ_STATISTICS_HEADER_SIZE] = {0};
  memcpy(header, IQ_STATISTICS_MAGIC, sizeof IQ_STATISTICS_MAGIC);
  put_u32(header + 8, IQ_STATISTICS_VERSION);
  put_u32(header + 12, IQ_STATISTICS_HEADER_SIZE);
  put_u32(header + 16, w->info.layers);
  put_u32(header + 20, w->info.windows);
  put_u32(header + 24, w->info.window_length);
  put_u32(header + 28, w->entry_count);
  put_u64(header + 32, w->info.seed);
  put_u64(header + 40, w->info.skip_tokens);
  put_u64(header + 48, w->info.token_count);
  put_u64(header + 56, IQ_STATISTICS_HEADER_SIZE); /* the window table follows the header */
  put_u64(header + 64, index_offset);
  put_u64(header + 72, w->offset);
  put_u64(header + 80, w->tokens_offset);
  if (ok && pwrite(w->fd, header, sizeof header, 0) != (ssize_t)sizeof header)
    ok = write_failed(w, error);
  if (ok && fsync(w->fd) != 0)
    ok = write_failed(w, error);
  if (ok && close(w->fd) != 0) {
    w->fd = -1;
    ok = write_failed(w, error);
  }
  w->fd = -1;
  if (ok && rename(w->temporary_path, w->path) != 0)
    ok = iq_error_set(error, w->path, NULL, "check the folder's permissions",
                      "cannot move the statistics file into place: %s", strerror(errno));
  if (!ok) {
    iq_statistics_writer_abort(w);
    return false;
  }
  free(w->entries);
  free(w->path);
  free(w->temporary_path);
  free(w);
  return true;
}

void iq_statistics_writer_abort(iq_statistics_writer_t *w) {
  if (!w)
    return;
  if (w->fd >= 0)
    close(w->fd);
  unlink(w->temporary_path);
  free(w->entries);
  free(w->path);
  free(w->temporary_path);
  free(w);
}
