/* Invalid calls into a library emitted by iq-compile for stories260K
 * (vocabulary 512).
 *
 *   runtime_errors WEIGHT_FILE OTHER_MODEL_WEIGHT_FILE MISSING_FILE CORRUPT_FILE...
 *
 * Runs each case and prints one line "CASE: STATUS: MESSAGE", where STATUS
 * is iq_status_name of the returned status and MESSAGE is iq_last_error(),
 * or "CASE: ok" for a call that succeeded. runtime-errors.test checks the
 * lines with FileCheck. The program itself checks the facts that a line
 * cannot show (a failed call leaves the session unchanged, output pointers
 * are set to NULL) and exits with status 1 when one of them is false.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_runtime.h"

#define MAX_CONTEXT 8

static int failures = 0;

static void report(const char *name, iq_status_t status) {
  if (status == IQ_OK) {
    printf("%s: ok\n", name);
  } else {
    printf("%s: %s: %s\n", name, iq_status_name(status), iq_last_error());
  }
}

static void expect(int condition, const char *description) {
  if (!condition) {
    printf("FAILED: %s\n", description);
    ++failures;
  }
}

static void check_open_errors(const char *other_model, const char *missing, char **corrupt,
                              int corrupt_count) {
  iq_model_t *model = (iq_model_t *)&model; /* Any non-NULL value, to see it reset. */
  report("open missing file", iq_model_open(missing, NULL, &model));
  expect(model == NULL, "a failed iq_model_open sets *model to NULL");
  for (int i = 0; i < corrupt_count; ++i) {
    char name[64];
    snprintf(name, sizeof name, "open corrupt file %d", i + 1);
    report(name, iq_model_open(corrupt[i], NULL, &model));
  }
  report("open other model's weights", iq_model_open(other_model, NULL, &model));
  report("open NULL weight_file", iq_model_open(NULL, NULL, &model));
  report("open NULL model", iq_model_open(missing, NULL, NULL));

  iq_model_options_t options = {0};
  report("open options struct_size 0", iq_model_open(missing, &options, &model));
  options.struct_size = sizeof options;
  options.num_threads = -1;
  report("open options num_threads -1", iq_model_open(missing, &options, &model));
}

static void check_model_errors(iq_model_t *model) {
  iq_model_config_t config;
  report("get_config NULL model", iq_model_get_config(NULL, &config));
  report("get_config NULL config", iq_model_get_config(model, NULL));

  iq_session_t *session = (iq_session_t *)&session;
  report("session_create NULL model", iq_session_create(NULL, MAX_CONTEXT, &session));
  expect(session == NULL, "a failed iq_session_create sets *session to NULL");
  report("session_create NULL session", iq_session_create(model, MAX_CONTEXT, NULL));
  report("session_create max_context 0", iq_session_create(model, 0, &session));
  report("session_create max_context -5", iq_session_create(model, -5, &session));
}

static void check_forward_errors(iq_session_t *session, float *logits) {
  int32_t tokens[MAX_CONTEXT + 1] = {1, 403, 407, 261, 378, 432, 383, 286, 261};

  report("forward NULL session", iq_session_forward(NULL, tokens, 1, 0, logits, 0));
  report("forward NULL tokens", iq_session_forward(session, NULL, 1, 0, logits, 0));
  report("forward count 0", iq_session_forward(session, tokens, 0, 0, logits, 0));
  report("forward count -1", iq_session_forward(session, tokens, -1, 0, logits, 0));

  int32_t bad_low[2] = {1, -1};
  report("forward token -1", iq_session_forward(session, bad_low, 2, 0, logits, 0));
  int32_t bad_high[1] = {512};
  report("forward token 512", iq_session_forward(session, bad_high, 1, 0, logits, 0));
  expect(iq_session_length(session) == 0, "a rejected token leaves the length at 0");

  report("forward position 3 of length 0", iq_session_forward(session, tokens, 1, 3, logits, 0));
  report("forward position -1", iq_session_forward(session, tokens, 1, -1, logits, 0));
  report("forward 9 tokens, max_context 8",
         iq_session_forward(session, tokens, MAX_CONTEXT + 1, 0, logits, 0));
  expect(iq_session_length(session) == 0, "rejected positions leave the length at 0");

  /* logits may be NULL to only fill the cache. */
  report("forward 5 tokens, NULL logits", iq_session_forward(session, tokens, 5, 0, NULL, 0));
  expect(iq_session_length(session) == 5, "the length is 5 after 5 tokens at position 0");
  report("forward position 6 of length 5", iq_session_forward(session, tokens, 1, 6, logits, 0));
  report("forward 3 tokens at position 5", iq_session_forward(session, tokens, 3, 5, logits, 0));
  expect(iq_session_length(session) == 8, "the length is 8 after 3 tokens at position 5");
  report("forward position 8, past max_context",
         iq_session_forward(session, tokens, 1, MAX_CONTEXT, logits, 1));
  report("forward 2 tokens at position 7", iq_session_forward(session, tokens, 2, 7, logits, 0));
  expect(iq_session_length(session) == 8, "rejected positions leave the length at 8");

  /* Rewinding: a position below the length replaces the cache from there. */
  report("forward rewind to position 2", iq_session_forward(session, tokens, 1, 2, logits, 1));
  expect(iq_session_length(session) == 3, "the length is 3 after a rewind to position 2");
}

static void check_cache_errors(iq_session_t *session) {
  report("truncate NULL session", iq_session_truncate(NULL, 0));
  report("truncate to 4 of length 3", iq_session_truncate(session, 4));
  report("truncate to -1", iq_session_truncate(session, -1));
  report("truncate to 1", iq_session_truncate(session, 1));
  expect(iq_session_length(session) == 1, "the length is 1 after truncating to 1");
  report("reset NULL session", iq_session_reset(NULL));
  report("reset", iq_session_reset(session));
  expect(iq_session_length(session) == 0, "the length is 0 after a reset");

  expect(iq_session_length(NULL) == -1, "iq_session_length(NULL) returns -1");
  printf("length NULL session: %s\n", iq_last_error());
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: runtime_errors WEIGHT_FILE OTHER_MODEL_WEIGHT_FILE MISSING_FILE "
                    "CORRUPT_FILE...\n");
    return 2;
  }
  printf("last error before any failure: \"%s\"\n", iq_last_error());
  printf("status 99: %s\n", iq_status_name((iq_status_t)99));
  expect(iq_runtime_abi_version() == IQ_RUNTIME_ABI_VERSION,
         "the library's ABI version equals the header's");

  check_open_errors(argv[2], argv[3], argv + 4, argc - 4);

  iq_model_t *model = NULL;
  iq_status_t status = iq_model_open(argv[1], NULL, &model);
  report("open", status);
  if (status != IQ_OK) {
    return 1;
  }
  check_model_errors(model);

  iq_session_t *session = NULL;
  status = iq_session_create(model, MAX_CONTEXT, &session);
  report("session_create", status);
  if (status != IQ_OK) {
    iq_model_close(model);
    return 1;
  }
  /* A success leaves the last failure's text in place. */
  printf("last error after a success: %s\n", iq_last_error());

  float *logits = malloc(sizeof(float) * 512 * (MAX_CONTEXT + 1));
  if (!logits) {
    return 1;
  }
  check_forward_errors(session, logits);
  check_cache_errors(session);

  /* The session keeps the model alive after iq_model_close. */
  iq_model_close(model);
  int32_t token = 1;
  report("forward after model close", iq_session_forward(session, &token, 1, 0, logits, 1));

  free(logits);
  iq_session_destroy(session);
  iq_session_destroy(NULL);
  iq_model_close(NULL);
  printf("%d failed expectations\n", failures);
  return failures == 0 ? 0 : 1;
}
