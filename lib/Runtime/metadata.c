/* Parsing of iq_model_metadata, the text iq-compile writes into the
 * library (the format is described in iq_compiled.h). The text comes from
 * the same library, but a damaged build or a mismatched iq-compile can
 * still produce anything, so every field is checked before use. */
#include "runtime_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_compiled.h"

#define MAX_FIELDS (6 + IQ_WEIGHT_STORE_MAX_RANK)
#define RECOMPILE_HINT "recompile the model with iq-compile"

/* One line split at single spaces. The fields point into a modified copy
 * of the line. */
typedef struct record {
  size_t line_number;
  size_t count;
  char *fields[MAX_FIELDS];
} record_t;

/* The header records, each of which must appear exactly once. */
enum { SEEN_TARGET = 1, SEEN_QUANTIZATION = 2, SEEN_CONFIG = 4, SEEN_CACHE = 8, SEEN_ALL = 15 };

static iq_status_t fail_at(const record_t *record, const char *message, const char *value) {
  return iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata line %zu: %s \"%s\"; %s",
                    record->line_number, message, value, RECOMPILE_HINT);
}

/* Splits `line` in place. Empty fields (two spaces in a row, or a space
 * at either end) are rejected, because the format uses single spaces. */
static iq_status_t split_record(char *line, size_t line_number, record_t *record) {
  record->line_number = line_number;
  record->count = 0;
  char *field = line;
  for (;;) {
    char *space = strchr(field, ' ');
    if (space) {
      *space = '\0';
    }
    if (*field == '\0') {
      return iq_rt_fail(IQ_ERROR_FORMAT,
                        "iq_model_metadata line %zu: empty field (fields are separated by "
                        "single spaces); %s",
                        line_number, RECOMPILE_HINT);
    }
    if (record->count == MAX_FIELDS) {
      return iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata line %zu: more than %d fields; %s",
                        line_number, MAX_FIELDS, RECOMPILE_HINT);
    }
    record->fields[record->count++] = field;
    if (!space) {
      return IQ_OK;
    }
    field = space + 1;
  }
}

static iq_status_t expect_fields(const record_t *record, size_t count) {
  if (record->count != count) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: \"%s\" record has %zu fields, expected %zu; %s",
                      record->line_number, record->fields[0], record->count, count,
                      RECOMPILE_HINT);
  }
  return IQ_OK;
}

/* Parses a decimal integer in [min, max]. */
static iq_status_t parse_integer(const record_t *record, size_t index, const char *what,
                                 int64_t min, int64_t max, int64_t *value) {
  const char *text = record->fields[index];
  char *end = NULL;
  errno = 0;
  long long parsed = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || parsed < min || parsed > max) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: invalid %s \"%s\", expected an integer in "
                      "[%lld, %lld]; %s",
                      record->line_number, what, text, (long long)min, (long long)max,
                      RECOMPILE_HINT);
  }
  *value = parsed;
  return IQ_OK;
}

static iq_status_t parse_positive_float(const record_t *record, size_t index, const char *what,
                                        float *value) {
  const char *text = record->fields[index];
  char *end = NULL;
  errno = 0;
  float parsed = strtof(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(parsed) || !(parsed > 0.0f)) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: invalid %s \"%s\", expected a positive "
                      "finite number; %s",
                      record->line_number, what, text, RECOMPILE_HINT);
  }
  *value = parsed;
  return IQ_OK;
}

/* Copies `text` into a fixed-size config field, rejecting text that does
 * not fit with its NUL. */
static iq_status_t copy_name(const record_t *record, char *destination, size_t capacity) {
  const char *text = record->fields[1];
  if (strlen(text) >= capacity) {
    return fail_at(record, "value too long in", text);
  }
  strcpy(destination, text);
  return IQ_OK;
}

static iq_status_t parse_target(const record_t *record, iq_model_config_t *config) {
  iq_status_t status = expect_fields(record, 2);
  if (status != IQ_OK) {
    return status;
  }
#if defined(__x86_64__)
  static const char runtime_target[] = "x86_64-linux-gnu";
#elif defined(__aarch64__)
  static const char runtime_target[] = "aarch64-linux-gnu";
#else
  static const char runtime_target[] = "";
#endif
  /* Code for one target linked with a runtime built for another would
   * not have linked at all, so a mismatch means the text is corrupt. */
  if (runtime_target[0] != '\0' && strcmp(record->fields[1], runtime_target) != 0) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: target \"%s\" does not match the runtime's "
                      "target \"%s\"; %s",
                      record->line_number, record->fields[1], runtime_target, RECOMPILE_HINT);
  }
  return copy_name(record, config->target, sizeof config->target);
}

static iq_status_t parse_quantization(const record_t *record, iq_model_config_t *config) {
  iq_status_t status = expect_fields(record, 2);
  if (status != IQ_OK) {
    return status;
  }
  const char *value = record->fields[1];
  if (strcmp(value, "none") != 0 && strcmp(value, "w4a16") != 0 &&
      strcmp(value, "w4a4kv4") != 0 && strcmp(value, "a4kv4") != 0) {
    return fail_at(record, "unknown quantization (expected none, w4a16, w4a4kv4 or a4kv4)", value);
  }
  return copy_name(record, config->quantization, sizeof config->quantization);
}

static iq_status_t parse_config(const record_t *record, iq_model_config_t *config) {
  iq_status_t status = expect_fields(record, 10);
  static const char *const names[7] = {"layers",   "hidden size", "heads",     "KV heads",
                                       "head dim", "FFN size",    "vocab size"};
  int64_t values[7];
  for (size_t i = 0; i < 7 && status == IQ_OK; ++i) {
    int64_t max = i == 0 ? IQ_RT_MAX_LAYERS : IQ_RT_MAX_DIMENSION;
    status = parse_integer(record, i + 1, names[i], 1, max, &values[i]);
  }
  if (status == IQ_OK) {
    status = parse_positive_float(record, 8, "RoPE theta", &config->rope_theta);
  }
  if (status == IQ_OK) {
    status = parse_positive_float(record, 9, "norm epsilon", &config->norm_epsilon);
  }
  if (status != IQ_OK) {
    return status;
  }
  config->layers = (int32_t)values[0];
  config->hidden_size = (int32_t)values[1];
  config->num_heads = (int32_t)values[2];
  config->num_kv_heads = (int32_t)values[3];
  config->head_dim = (int32_t)values[4];
  config->ffn_size = (int32_t)values[5];
  config->vocab_size = (int32_t)values[6];
  /* Grouped-query attention shares each KV head among a whole number of
   * query heads. */
  if (config->num_heads % config->num_kv_heads != 0) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: %d heads is not a multiple of %d KV heads; %s",
                      record->line_number, config->num_heads, config->num_kv_heads,
                      RECOMPILE_HINT);
  }
  return IQ_OK;
}

static iq_status_t parse_cache(const record_t *record, iq_rt_metadata_t *metadata) {
  iq_status_t status = expect_fields(record, 2);
  if (status != IQ_OK) {
    return status;
  }
  if (strcmp(record->fields[1], "int4") == 0) {
    metadata->int4_cache = true;
  } else if (strcmp(record->fields[1], "f32") != 0) {
    return fail_at(record, "unsupported cache type (this runtime allocates f32 and int4 caches)",
                   record->fields[1]);
  }
  return status;
}

static bool parse_dtype(const char *text, iq_dtype_t *dtype) {
  /* The enum has gaps, so walk the full byte range of values. */
  for (int value = 0; value < 256; ++value) {
    const char *name = iq_dtype_name((iq_dtype_t)value);
    if (name && strcmp(name, text) == 0) {
      *dtype = (iq_dtype_t)value;
      return true;
    }
  }
  return false;
}

static iq_status_t parse_weight(const record_t *record, iq_rt_metadata_t *metadata) {
  if (record->count < 6) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: \"weight\" record has %zu fields, expected "
                      "at least 6; %s",
                      record->line_number, record->count, RECOMPILE_HINT);
  }
  int64_t index = 0;
  int64_t transposed = 0;
  int64_t rank = 0;
  iq_status_t status = parse_integer(record, 1, "weight index", 0, IQ_RT_MAX_WEIGHTS - 1, &index);
  if (status == IQ_OK && (size_t)index != metadata->weight_count) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: weight index %lld out of order, expected "
                      "%zu; %s",
                      record->line_number, (long long)index, metadata->weight_count,
                      RECOMPILE_HINT);
  }
  iq_rt_weight_spec_t spec = {0};
  if (status == IQ_OK && !parse_dtype(record->fields[3], &spec.dtype)) {
    return fail_at(record, "unknown weight dtype", record->fields[3]);
  }
  if (status == IQ_OK) {
    status = parse_integer(record, 4, "transposed flag", 0, 1, &transposed);
  }
  if (status == IQ_OK) {
    status = parse_integer(record, 5, "weight rank", 1, IQ_WEIGHT_STORE_MAX_RANK, &rank);
  }
  if (status == IQ_OK && record->count != 6 + (size_t)rank) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: weight \"%s\" of rank %lld has %zu dims; %s",
                      record->line_number, record->fields[2], (long long)rank,
                      record->count - 6, RECOMPILE_HINT);
  }
  if (status == IQ_OK && transposed && rank != 2) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "iq_model_metadata line %zu: weight \"%s\" is marked transposed but has "
                      "rank %lld (only matrices are stored transposed); %s",
                      record->line_number, record->fields[2], (long long)rank, RECOMPILE_HINT);
  }
  for (int64_t i = 0; i < rank && status == IQ_OK; ++i) {
    status = parse_integer(record, 6 + (size_t)i, "weight dim", 1, INT64_C(1) << 40,
                           &spec.dims[i]);
  }
  if (status != IQ_OK) {
    return status;
  }
  for (size_t i = 0; i < metadata->weight_count; ++i) {
    if (strcmp(metadata->weights[i].name, record->fields[2]) == 0) {
      return fail_at(record, "duplicate weight name", record->fields[2]);
    }
  }

  spec.transposed = transposed != 0;
  spec.rank = (uint32_t)rank;
  spec.name = strdup(record->fields[2]);
  if (!spec.name) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "out of memory reading iq_model_metadata");
  }
  /* Grow by doubling; the count is bounded by IQ_RT_MAX_WEIGHTS. */
  size_t count = metadata->weight_count;
  if ((count & (count - 1)) == 0) {
    size_t capacity = count == 0 ? 16 : count * 2;
    iq_rt_weight_spec_t *grown = realloc(metadata->weights, capacity * sizeof *grown);
    if (!grown) {
      free(spec.name);
      return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "out of memory reading iq_model_metadata");
    }
    metadata->weights = grown;
  }
  metadata->weights[count] = spec;
  metadata->weight_count = count + 1;
  return IQ_OK;
}

/* Parses one record after the version line. Sets `*ended` on "end". */
static iq_status_t parse_record(const record_t *record, iq_rt_metadata_t *metadata,
                                unsigned *seen, bool *ended) {
  const char *kind = record->fields[0];
  if (strcmp(kind, "weight") == 0) {
    if (*seen != SEEN_ALL) {
      return fail_at(record, "weight record before the target, quantization, config and cache "
                             "records, at",
                     kind);
    }
    return parse_weight(record, metadata);
  }
  if (strcmp(kind, "end") == 0) {
    if (*seen != SEEN_ALL) {
      return fail_at(record, "missing target, quantization, config or cache record before",
                     kind);
    }
    *ended = true;
    return expect_fields(record, 1);
  }

  static const struct {
    const char *name;
    unsigned bit;
  } header_records[] = {{"target", SEEN_TARGET},
                        {"quantization", SEEN_QUANTIZATION},
                        {"config", SEEN_CONFIG},
                        {"cache", SEEN_CACHE}};
  for (size_t i = 0; i < sizeof header_records / sizeof header_records[0]; ++i) {
    if (strcmp(kind, header_records[i].name) != 0) {
      continue;
    }
    if (*seen & header_records[i].bit) {
      return fail_at(record, "duplicate record", kind);
    }
    if (metadata->weight_count > 0) {
      return fail_at(record, "header record after the weight records", kind);
    }
    *seen |= header_records[i].bit;
    switch (header_records[i].bit) {
    case SEEN_TARGET:
      return parse_target(record, &metadata->config);
    case SEEN_QUANTIZATION:
      return parse_quantization(record, &metadata->config);
    case SEEN_CONFIG:
      return parse_config(record, &metadata->config);
    default:
      return parse_cache(record, metadata);
    }
  }
  return fail_at(record, "unknown record", kind);
}

static iq_status_t parse_lines(char *text, iq_rt_metadata_t *metadata) {
  unsigned seen = 0;
  bool ended = false;
  size_t line_number = 0;
  char *line = text;
  while (*line != '\0') {
    ++line_number;
    char *newline = strchr(line, '\n');
    if (!newline) {
      return iq_rt_fail(IQ_ERROR_FORMAT,
                        "iq_model_metadata line %zu: the text does not end with a newline; %s",
                        line_number, RECOMPILE_HINT);
    }
    *newline = '\0';
    if (ended) {
      return iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata line %zu: text after \"end\"; %s",
                        line_number, RECOMPILE_HINT);
    }
    record_t record;
    iq_status_t status = split_record(line, line_number, &record);
    if (status == IQ_OK && line_number == 1) {
      if (record.count >= 1 && strcmp(record.fields[0], "iq-graph") == 0) {
        return iq_rt_fail(IQ_ERROR_FORMAT,
                          "this library was compiled with iq-compile --graph: it exports "
                          "iq_graph_forward for a generic graph, not the LLaMA interface of "
                          "iq_runtime.h; compile a LLaMA model without --graph");
      }
      if (record.count != 2 || strcmp(record.fields[0], "iq-model") != 0) {
        return fail_at(&record, "expected \"iq-model 1\", found", record.fields[0]);
      }
      if (strcmp(record.fields[1], "1") != 0) {
        return iq_rt_fail(IQ_ERROR_FORMAT,
                          "iq_model_metadata version %s is not supported (this runtime reads "
                          "version %d); %s",
                          record.fields[1], IQ_COMPILED_METADATA_VERSION, RECOMPILE_HINT);
      }
    } else if (status == IQ_OK) {
      status = parse_record(&record, metadata, &seen, &ended);
    }
    if (status != IQ_OK) {
      return status;
    }
    line = newline + 1;
  }
  if (!ended) {
    return iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata has no \"end\" record; %s",
                      RECOMPILE_HINT);
  }
  if (metadata->weight_count == 0) {
    return iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata lists no weights; %s", RECOMPILE_HINT);
  }
  return IQ_OK;
}

iq_status_t iq_rt_metadata_parse(const char *text, iq_rt_metadata_t *metadata) {
  memset(metadata, 0, sizeof *metadata);
  char *copy = strdup(text);
  if (!copy) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "out of memory reading iq_model_metadata");
  }
  iq_status_t status = parse_lines(copy, metadata);
  free(copy);
  if (status != IQ_OK) {
    iq_rt_metadata_free(metadata);
  }
  return status;
}

void iq_rt_metadata_free(iq_rt_metadata_t *metadata) {
  for (size_t i = 0; i < metadata->weight_count; ++i) {
    free(metadata->weights[i].name);
  }
  free(metadata->weights);
  memset(metadata, 0, sizeof *metadata);
}
