/* Progress lines for long stages: see iq/support.h for the contract. */
#include "iq/support.h"
#include "support_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Redrawing a terminal line more often than this only costs time. */
#define TERMINAL_INTERVAL_S 0.1
/* A forced line on a pipe or file is a new line each time, so print fewer. */
#define FORCED_INTERVAL_S 1.0
/* ETAs beyond this (about three years) are as good as unknown. */
#define MAX_ETA_S 1e8

struct iq_progress {
  char *stage;
  char *unit;
  uint64_t total; /* 0 when unknown */
  uint64_t done;
  FILE *stream;
  bool force;
  bool is_terminal;
  double start_s;     /* CLOCK_MONOTONIC seconds at iq_progress_start */
  double last_draw_s; /* seconds since start of the last line, if drawn */
  bool drawn;
};

static double monotonic_seconds(void) {
  struct timespec now;
  if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
    return 0.0;
  }
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Converts an snprintf result into the count of characters actually stored
 * in a buffer of `size` bytes. */
static size_t stored_length(int length, size_t size) {
  if (length < 0 || size == 0) {
    return 0;
  }
  if ((size_t)length >= size) {
    return size - 1;
  }
  return (size_t)length;
}

/* Writes "m:ss", or "h:mm:ss" from one hour on. */
static void format_duration(uint64_t seconds, char *buffer, size_t size) {
  uint64_t hours = seconds / 3600;
  uint64_t minutes = (seconds % 3600) / 60;
  uint64_t rest = seconds % 60;
  if (hours > 0) {
    snprintf(buffer, size, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, hours,
             minutes, rest);
  } else {
    snprintf(buffer, size, "%" PRIu64 ":%02" PRIu64, minutes, rest);
  }
}

static uint64_t round_seconds(double seconds) {
  if (!(seconds > 0.0)) {
    return 0;
  }
  return (uint64_t)(seconds + 0.5);
}

static double rate_per_second(const iq_progress_t *progress, double now_s) {
  if (!(now_s > 0.0)) {
    return 0.0;
  }
  return (double)progress->done / now_s;
}

/* Writes "done/total", or only "done" when the total is unknown. */
static void format_count(const iq_progress_t *progress, char *buffer,
                         size_t size) {
  if (progress->total > 0) {
    snprintf(buffer, size, "%" PRIu64 "/%" PRIu64, progress->done,
             progress->total);
  } else {
    snprintf(buffer, size, "%" PRIu64, progress->done);
  }
}

size_t iq_progress_format(const iq_progress_t *progress, double now_s,
                          char *buffer, size_t size) {
  if (progress == NULL || buffer == NULL) {
    return 0;
  }

  char count[48];
  format_count(progress, count, sizeof(count));
  double rate = rate_per_second(progress, now_s);

  char eta[32] = "?";
  if (progress->total > 0 && rate > 0.0) {
    double remaining_s = 0.0;
    if (progress->done < progress->total) {
      remaining_s = (double)(progress->total - progress->done) / rate;
    }
    if (remaining_s < MAX_ETA_S) {
      format_duration(round_seconds(remaining_s), eta, sizeof(eta));
    }
  }

  int length = snprintf(buffer, size, "%s %s, %.1f %s/s, ETA %s", count,
                        progress->unit, rate, progress->unit, eta);
  return stored_length(length, size);
}

size_t iq_progress_format_final(const iq_progress_t *progress, double elapsed_s,
                                char *buffer, size_t size) {
  if (progress == NULL || buffer == NULL) {
    return 0;
  }

  char count[48];
  format_count(progress, count, sizeof(count));
  char elapsed[32];
  format_duration(round_seconds(elapsed_s), elapsed, sizeof(elapsed));
  double rate = rate_per_second(progress, elapsed_s);

  int length = snprintf(buffer, size, "%s: %s %s in %s (%.1f %s/s)",
                        progress->stage, count, progress->unit, elapsed, rate,
                        progress->unit);
  return stored_length(length, size);
}

void iq_progress_set_terminal(iq_progress_t *progress, bool is_terminal) {
  if (progress != NULL) {
    progress->is_terminal = is_terminal;
  }
}

iq_progress_t *iq_progress_start(const char *stage, uint64_t total,
                                 const char *unit, FILE *stream, bool force) {
  iq_progress_t *progress = calloc(1, sizeof(*progress));
  if (progress == NULL) {
    return NULL;
  }
  progress->stage = strdup(stage != NULL ? stage : "progress");
  progress->unit = strdup(unit != NULL ? unit : "items");
  if (progress->stage == NULL || progress->unit == NULL) {
    free(progress->stage);
    free(progress->unit);
    free(progress);
    return NULL;
  }

  progress->total = total;
  progress->stream = stream != NULL ? stream : stderr;
  progress->force = force;
  progress->is_terminal = isatty(fileno(progress->stream)) == 1;
  progress->start_s = monotonic_seconds();
  return progress;
}

static void draw(iq_progress_t *progress, double now_s) {
  char line[512];
  iq_progress_format(progress, now_s, line, sizeof(line));
  if (progress->is_terminal) {
    /* "\r" returns to the line start and ESC [ K clears what a longer
     * earlier line left behind. */
    fprintf(progress->stream, "\r%s: %s\033[K", progress->stage, line);
  } else {
    fprintf(progress->stream, "%s: %s\n", progress->stage, line);
  }
  fflush(progress->stream);
  progress->drawn = true;
  progress->last_draw_s = now_s;
}

static void maybe_draw(iq_progress_t *progress) {
  if (!progress->is_terminal && !progress->force) {
    return;
  }
  double now_s = monotonic_seconds() - progress->start_s;
  double interval_s =
      progress->is_terminal ? TERMINAL_INTERVAL_S : FORCED_INTERVAL_S;
  if (progress->drawn && now_s - progress->last_draw_s < interval_s) {
    return;
  }
  draw(progress, now_s);
}

void iq_progress_update(iq_progress_t *progress, uint64_t done) {
  if (progress == NULL) {
    return;
  }
  progress->done = done;
  maybe_draw(progress);
}

void iq_progress_advance(iq_progress_t *progress, uint64_t delta) {
  if (progress == NULL) {
    return;
  }
  /* Saturate instead of wrapping around to a small count. */
  if (delta > UINT64_MAX - progress->done) {
    progress->done = UINT64_MAX;
  } else {
    progress->done += delta;
  }
  maybe_draw(progress);
}

void iq_progress_finish(iq_progress_t *progress) {
  if (progress == NULL) {
    return;
  }
  double elapsed_s = monotonic_seconds() - progress->start_s;
  char line[512];
  iq_progress_format_final(progress, elapsed_s, line, sizeof(line));
  if (progress->is_terminal) {
    fprintf(progress->stream, "\r%s\033[K\n", line);
  } else {
    fprintf(progress->stream, "%s\n", line);
  }
  fflush(progress->stream);

  free(progress->stage);
  free(progress->unit);
  free(progress);
}
