/* Greedy decoding through a library emitted by iq-compile.
 *
 *   generate WEIGHT_FILE COUNT
 *
 * Feeds BOS (token 1) at position 0, then each argmax at the next position,
 * one token per call, and prints the COUNT generated token ids one per line.
 * compare_with_onnxruntime.py --tokens-out writes the same format, so diff
 * can compare the two. Ties go to the lowest id, as with numpy.argmax.
 */
#include <stdio.h>
#include <stdlib.h>

#include "iq/iq_runtime.h"

#define BOS_ID 1

static int fail(const char *call, iq_status_t status) {
  fprintf(stderr, "generate: %s failed with %s: %s\n", call, iq_status_name(status), iq_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: generate WEIGHT_FILE COUNT\n");
    return 2;
  }
  char *end = NULL;
  long count = strtol(argv[2], &end, 10);
  if (*end != '\0' || count < 1 || count > 1000000) {
    fprintf(stderr, "generate: invalid COUNT \"%s\", expected an integer from 1 to 1000000\n",
            argv[2]);
    return 2;
  }

  iq_model_t *model = NULL;
  iq_status_t status = iq_model_open(argv[1], NULL, &model);
  if (status != IQ_OK) {
    return fail("iq_model_open", status);
  }
  iq_model_config_t config;
  status = iq_model_get_config(model, &config);
  if (status != IQ_OK) {
    iq_model_close(model);
    return fail("iq_model_get_config", status);
  }
  iq_session_t *session = NULL;
  status = iq_session_create(model, (int32_t)count, &session);
  if (status != IQ_OK) {
    iq_model_close(model);
    return fail("iq_session_create", status);
  }
  float *logits = malloc(sizeof(float) * (size_t)config.vocab_size);
  if (!logits) {
    fprintf(stderr, "generate: out of memory for %d logits\n", config.vocab_size);
    iq_session_destroy(session);
    iq_model_close(model);
    return 1;
  }

  int exit_code = 0;
  int32_t token = BOS_ID;
  for (int32_t position = 0; position < count; ++position) {
    status = iq_session_forward(session, &token, 1, position, logits, 1);
    if (status != IQ_OK) {
      exit_code = fail("iq_session_forward", status);
      break;
    }
    int32_t best = 0;
    for (int32_t id = 1; id < config.vocab_size; ++id) {
      if (logits[id] > logits[best]) {
        best = id;
      }
    }
    printf("%d\n", best);
    token = best;
  }

  free(logits);
  iq_session_destroy(session);
  iq_model_close(model);
  return exit_code;
}
