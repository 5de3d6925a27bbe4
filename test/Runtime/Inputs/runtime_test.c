/* Tests of the runtime's public ABI against the fake model in
 * fake_model.c, linked into one program with the runtime archive.
 *
 *   runtime_test write-weights PATH   writes the fake model's .iqw
 *   runtime_test check DIR            writes weight files into DIR and
 *                                     runs every check, printing PASS or
 *                                     FAIL per check and each expected
 *                                     error as "error CASE: STATUS: TEXT"
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_runtime.h"
#include "iq/weight_store.h"

#define HIDDEN 8
#define VOCAB 512

static int failures;
static int checks;

static void check(int condition, const char *name) {
  ++checks;
  if (!condition) {
    ++failures;
  }
  printf("%s %s\n", condition ? "PASS" : "FAIL", name);
}

/* Checks that a call failed with `expected` and prints its message. */
static void check_error(iq_status_t status, iq_status_t expected, const char *name) {
  printf("error %s: %s: %s\n", name, iq_status_name(status), iq_last_error());
  check(status == expected, name);
}

typedef enum variant {
  VARIANT_GOOD,
  VARIANT_WRONG_SHAPE,    /* embed [512, 9] */
  VARIANT_WRONG_DTYPE,    /* norm f16 */
  VARIANT_MISSING,        /* no norm */
  VARIANT_NOT_TRANSPOSED, /* output [512, 8] instead of [8, 512] */
} variant_t;

static int write_weights(const char *path, variant_t variant) {
  iq_error_t *error = NULL;
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, &error);
  static float embed[VOCAB * 9];
  static float output[HIDDEN * VOCAB];
  float norm[HIDDEN];
  for (int i = 0; i < VOCAB * 9; ++i) {
    embed[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
  }
  for (int i = 0; i < HIDDEN * VOCAB; ++i) {
    output[i] = (float)((i * 53) % 97) / 97.0f - 0.5f;
  }
  for (int i = 0; i < HIDDEN; ++i) {
    norm[i] = 1.0f + (float)i / 8.0f;
  }
  int64_t embed_dims[2] = {VOCAB, variant == VARIANT_WRONG_SHAPE ? 9 : HIDDEN};
  int64_t output_dims[2] = {HIDDEN, VOCAB};
  if (variant == VARIANT_NOT_TRANSPOSED) {
    output_dims[0] = VOCAB;
    output_dims[1] = HIDDEN;
  }
  int64_t norm_dims[1] = {HIDDEN};
  bool ok = writer &&
            iq_weight_store_writer_add(writer, "embed", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 2,
                                       embed_dims, embed,
                                       (uint64_t)embed_dims[0] * (uint64_t)embed_dims[1] * 4,
                                       &error) &&
            iq_weight_store_writer_add(writer, "output", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 2,
                                       output_dims, output, sizeof output, &error);
  if (ok && variant == VARIANT_WRONG_DTYPE) {
    ok = iq_weight_store_writer_add(writer, "norm", IQ_DTYPE_F16, IQ_LAYOUT_ROW_MAJOR, 1,
                                    norm_dims, norm, HIDDEN * 2, &error);
  } else if (ok && variant != VARIANT_MISSING) {
    ok = iq_weight_store_writer_add(writer, "norm", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1,
                                    norm_dims, norm, sizeof norm, &error);
  }
  if (ok) {
    ok = iq_weight_store_writer_finish(writer, &error);
  } else if (writer) {
    iq_weight_store_writer_abandon(writer);
  }
  if (!ok) {
    iq_error_print(error, "runtime_test", stderr);
    iq_error_destroy(error);
    return 1;
  }
  return 0;
}

static char *join(const char *dir, const char *name) {
  static char buffers[8][4096];
  static int next;
  char *buffer = buffers[next++ % 8];
  snprintf(buffer, sizeof buffers[0], "%s/%s", dir, name);
  return buffer;
}

static float max_difference(const float *a, const float *b, size_t count) {
  float max = 0.0f;
  for (size_t i = 0; i < count; ++i) {
    float difference = fabsf(a[i] - b[i]);
    max = difference > max ? difference : max;
  }
  return max;
}

static void check_open_errors(const char *dir) {
  iq_model_t *model = (iq_model_t *)1;
  check_error(iq_model_open(join(dir, "absent.iqw"), NULL, &model), IQ_ERROR_IO,
              "open_missing_file");
  check(model == NULL, "open_failure_clears_model");
  check_error(iq_model_open(join(dir, "garbage.iqw"), NULL, &model), IQ_ERROR_FORMAT,
              "open_garbage_file");
  check_error(iq_model_open(join(dir, "wrong-shape.iqw"), NULL, &model), IQ_ERROR_FORMAT,
              "open_wrong_shape");
  check_error(iq_model_open(join(dir, "wrong-dtype.iqw"), NULL, &model), IQ_ERROR_FORMAT,
              "open_wrong_dtype");
  check_error(iq_model_open(join(dir, "missing.iqw"), NULL, &model), IQ_ERROR_FORMAT,
              "open_missing_weight");
  check_error(iq_model_open(join(dir, "not-transposed.iqw"), NULL, &model), IQ_ERROR_FORMAT,
              "open_not_transposed");
  check_error(iq_model_open(NULL, NULL, &model), IQ_ERROR_INVALID_ARGUMENT, "open_null_path");
  check_error(iq_model_open(join(dir, "model.iqw"), NULL, NULL), IQ_ERROR_INVALID_ARGUMENT,
              "open_null_model");
  iq_model_options_t options = {.struct_size = 1, .num_threads = 0};
  check_error(iq_model_open(join(dir, "model.iqw"), &options, &model), IQ_ERROR_INVALID_ARGUMENT,
              "open_small_struct_size");
  options = (iq_model_options_t){.struct_size = sizeof options, .num_threads = -2};
  check_error(iq_model_open(join(dir, "model.iqw"), &options, &model), IQ_ERROR_INVALID_ARGUMENT,
              "open_negative_threads");
}

static void check_config(iq_model_t *model) {
  iq_model_config_t config;
  check(iq_model_get_config(model, &config) == IQ_OK, "config_ok");
  check(config.layers == 2 && config.hidden_size == 8 && config.num_heads == 1 &&
            config.num_kv_heads == 1 && config.head_dim == 8 && config.ffn_size == 16 &&
            config.vocab_size == VOCAB,
        "config_sizes");
  check(config.rope_theta == 10000.0f && fabsf(config.norm_epsilon - 1e-5f) < 1e-12f,
        "config_floats");
  check(strcmp(config.quantization, "none") == 0, "config_quantization");
  check(strstr(config.target, "-linux-gnu") != NULL, "config_target");
  check_error(iq_model_get_config(NULL, &config), IQ_ERROR_INVALID_ARGUMENT, "config_null_model");
  check_error(iq_model_get_config(model, NULL), IQ_ERROR_INVALID_ARGUMENT, "config_null_out");
  check(iq_runtime_num_threads() == 3, "num_threads_from_options");
}

static void check_forward_errors(iq_model_t *model) {
  iq_session_t *session = NULL;
  check_error(iq_session_create(model, 0, &session), IQ_ERROR_INVALID_ARGUMENT,
              "create_zero_context");
  check_error(iq_session_create(NULL, 8, &session), IQ_ERROR_INVALID_ARGUMENT, "create_null_model");
  check_error(iq_session_create(model, 8, NULL), IQ_ERROR_INVALID_ARGUMENT, "create_null_out");
  check(iq_session_create(model, 8, &session) == IQ_OK, "create_ok");

  int32_t tokens[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  float logits[VOCAB];
  check_error(iq_session_forward(NULL, tokens, 1, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_null_session");
  check_error(iq_session_forward(session, NULL, 1, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_null_tokens");
  check_error(iq_session_forward(session, tokens, 0, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_zero_count");
  check_error(iq_session_forward(session, tokens, -1, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_negative_count");
  int32_t bad[2] = {5, VOCAB};
  check_error(iq_session_forward(session, bad, 2, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_token_past_vocab");
  bad[1] = -1;
  check_error(iq_session_forward(session, bad, 2, 0, logits, 1), IQ_ERROR_INVALID_ARGUMENT,
              "forward_negative_token");
  check_error(iq_session_forward(session, tokens, 1, 1, logits, 1), IQ_ERROR_OUT_OF_RANGE,
              "forward_position_past_length");
  check_error(iq_session_forward(session, tokens, 1, -1, logits, 1), IQ_ERROR_OUT_OF_RANGE,
              "forward_negative_position");
  check_error(iq_session_forward(session, tokens, 9, 0, logits, 1), IQ_ERROR_OUT_OF_RANGE,
              "forward_past_context");
  check(iq_session_length(session) == 0, "failed_forward_keeps_length");
  check(iq_session_forward(session, tokens, 8, 0, NULL, 1) == IQ_OK, "forward_fills_context");
  check_error(iq_session_forward(session, tokens, 1, 8, logits, 1), IQ_ERROR_OUT_OF_RANGE,
              "forward_at_full_context");
  check_error(iq_session_truncate(session, 9), IQ_ERROR_OUT_OF_RANGE, "truncate_past_length");
  check_error(iq_session_truncate(session, -1), IQ_ERROR_OUT_OF_RANGE, "truncate_negative");
  check_error(iq_session_truncate(NULL, 0), IQ_ERROR_INVALID_ARGUMENT, "truncate_null");
  check_error(iq_session_reset(NULL), IQ_ERROR_INVALID_ARGUMENT, "reset_null");
  check(iq_session_length(NULL) == -1, "length_null");
  iq_session_destroy(session);
  iq_session_destroy(NULL);
}

/* Compares one call over a sequence with token-by-token calls, then
 * checks the length after rewinds, truncation and reset. */
static void check_forward_results(iq_model_t *model) {
  enum { COUNT = 6 };
  int32_t tokens[COUNT] = {1, 403, 407, 261, 378, 11};
  static float all[COUNT * VOCAB];
  static float step[COUNT * VOCAB];
  float last[VOCAB];
  iq_session_t *session = NULL;
  check(iq_session_create(model, 16, &session) == IQ_OK, "results_create");

  check(iq_session_forward(session, tokens, COUNT, 0, all, 0) == IQ_OK, "forward_all_rows");
  check(iq_session_length(session) == COUNT, "length_after_prefill");
  check(iq_session_reset(session) == IQ_OK && iq_session_length(session) == 0, "reset_empties");
  for (int i = 0; i < COUNT; ++i) {
    check(iq_session_forward(session, &tokens[i], 1, i, step + i * VOCAB, 1) == IQ_OK,
          "forward_one_token");
  }
  check(max_difference(all, step, COUNT * VOCAB) < 1e-5f, "prefill_matches_decode");

  check(iq_session_reset(session) == IQ_OK, "reset_again");
  check(iq_session_forward(session, tokens, COUNT, 0, last, 1) == IQ_OK, "forward_last_only");
  check(max_difference(last, all + (COUNT - 1) * VOCAB, VOCAB) < 1e-5f, "last_only_is_last_row");

  /* Rewind to position 2 and replace the rest: the logits must equal a
   * fresh run over the new sequence. */
  int32_t replaced[COUNT] = {1, 403, 9, 10, 11, 12};
  check(iq_session_forward(session, replaced + 2, 4, 2, last, 1) == IQ_OK, "forward_rewind");
  check(iq_session_length(session) == COUNT, "length_after_rewind");
  iq_session_t *fresh = NULL;
  check(iq_session_create(model, 16, &fresh) == IQ_OK, "fresh_create");
  check(iq_session_forward(fresh, replaced, COUNT, 0, all, 0) == IQ_OK, "fresh_forward");
  check(max_difference(last, all + (COUNT - 1) * VOCAB, VOCAB) < 1e-5f, "rewind_matches_fresh");

  check(iq_session_forward(session, tokens, 1, 1, NULL, 0) == IQ_OK, "forward_null_logits");
  check(iq_session_length(session) == 2, "rewind_shortens_length");
  check(iq_session_truncate(session, 1) == IQ_OK && iq_session_length(session) == 1,
        "truncate_keeps_prefix");
  check(iq_session_truncate(session, 1) == IQ_OK, "truncate_to_same_length");

  /* Two sessions are independent. */
  check(iq_session_length(fresh) == COUNT, "sessions_independent");
  iq_session_destroy(fresh);
  iq_session_destroy(session);
}

static int run_checks(const char *dir) {
  if (write_weights(join(dir, "model.iqw"), VARIANT_GOOD) ||
      write_weights(join(dir, "wrong-shape.iqw"), VARIANT_WRONG_SHAPE) ||
      write_weights(join(dir, "wrong-dtype.iqw"), VARIANT_WRONG_DTYPE) ||
      write_weights(join(dir, "missing.iqw"), VARIANT_MISSING) ||
      write_weights(join(dir, "not-transposed.iqw"), VARIANT_NOT_TRANSPOSED)) {
    return 1;
  }
  FILE *garbage = fopen(join(dir, "garbage.iqw"), "wb");
  if (!garbage) {
    perror("garbage.iqw");
    return 1;
  }
  fputs("this is not a weight store, but it is long enough to hold the header bytes........",
        garbage);
  fclose(garbage);

  check(iq_runtime_abi_version() == IQ_RUNTIME_ABI_VERSION, "abi_version");
  check(strcmp(iq_status_name(IQ_ERROR_OUT_OF_RANGE), "out of range") == 0, "status_name");
  check(strcmp(iq_status_name((iq_status_t)99), "unknown status") == 0, "status_name_unknown");
  check(iq_last_error()[0] == '\0', "last_error_starts_empty");
  check_open_errors(dir);

  iq_model_t *model = NULL;
  iq_model_options_t options = {.struct_size = sizeof options, .num_threads = 3};
  check(iq_model_open(join(dir, "model.iqw"), &options, &model) == IQ_OK, "open_ok");
  if (!model) {
    return 1;
  }
  check_config(model);
  check_forward_errors(model);
  check_forward_results(model);

  /* A session outlives the caller's close of its model. */
  iq_session_t *session = NULL;
  int32_t token = 1;
  check(iq_session_create(model, 4, &session) == IQ_OK, "late_create");
  iq_model_close(model);
  check(iq_session_forward(session, &token, 1, 0, NULL, 0) == IQ_OK, "session_outlives_close");
  iq_session_destroy(session);
  iq_model_close(NULL);

  printf("%d checks, %d failed\n", checks, failures);
  return failures != 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "write-weights") == 0) {
    return write_weights(argv[2], VARIANT_GOOD);
  }
  if (argc == 3 && strcmp(argv[1], "check") == 0) {
    return run_checks(argv[2]);
  }
  fprintf(stderr, "usage: runtime_test write-weights PATH | check DIR\n");
  return 2;
}
