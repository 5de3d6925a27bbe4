/* iq-run's modes: text generation, perplexity and throughput. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_api.h"
#include "tokenizer.h"

/* Rows of logits per forward call when every row is needed (perplexity),
 * which bounds the logits buffer to this many rows of the vocabulary. */
#define PERPLEXITY_CHUNK 64

bool report_status(const model_api_t *api, const char *what, iq_status_t status) {
  fprintf(stderr, "iq-run: error: %s failed (%s): %s\n", what, api->status_name(status),
          api->last_error());
  return false;
}

static double now_seconds(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (double)time.tv_sec + (double)time.tv_nsec * 1e-9;
}

/* xorshift64* (Marsaglia's xorshift with Vigna's multiplier): fast and
 * reproducible for a given seed, which is all sampling needs. */
static uint64_t next_random(uint64_t *state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545F4914F6CDD1Du;
}

/* Returns a float in [0, 1) from the top 24 bits. */
static float random_unit(uint64_t *state) {
  return (float)(next_random(state) >> 40) / 16777216.0f;
}

static int32_t argmax(const float *logits, int32_t vocab) {
  int32_t best = 0;
  float best_value = logits[0];
  for (int32_t i = 1; i < vocab; ++i) {
    if (logits[i] > best_value) {
      best_value = logits[i];
      best = i;
    }
  }
  return best;
}

/* Samples from softmax(logits / temperature); modifies `logits`. */
static int32_t sample(float *logits, int32_t vocab, double temperature, uint64_t *state) {
  if (temperature <= 0.0) {
    return argmax(logits, vocab);
  }
  float max = logits[argmax(logits, vocab)];
  double sum = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    logits[i] = expf((float)((logits[i] - max) / temperature));
    sum += logits[i];
  }
  double target = random_unit(state) * sum;
  double cumulative = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    cumulative += logits[i];
    if (target < cumulative) {
      return i;
    }
  }
  return vocab - 1; /* rounding left target at the sum */
}

static bool check_vocabulary(const loaded_model_t *loaded, const tokenizer_t *tokenizer) {
  if (tokenizer->vocab_size > loaded->config.vocab_size) {
    fprintf(stderr,
            "iq-run: error: the tokenizer has %d tokens but the model's vocabulary has %d; pass "
            "the tokenizer the model was trained with\n",
            tokenizer->vocab_size, loaded->config.vocab_size);
    return false;
  }
  return true;
}

bool run_generate(loaded_model_t *loaded, const tokenizer_t *tokenizer, const char *prompt,
                  int32_t max_tokens, double temperature, uint64_t seed) {
  const model_api_t *api = &loaded->api;
  if (!check_vocabulary(loaded, tokenizer)) {
    return false;
  }
  int32_t *ids = NULL;
  size_t count = 0;
  iq_error_t *error = NULL;
  if (!tokenizer_encode(tokenizer, prompt, tokenizer->add_bos, &ids, &count, &error)) {
    iq_error_print(error, "iq-run", stderr);
    iq_error_destroy(error);
    return false;
  }
  if (count == 0 || count + (size_t)max_tokens > INT32_MAX) {
    fprintf(stderr, "iq-run: error: --prompt gives %zu tokens; expected 1 to %d\n", count,
            INT32_MAX - max_tokens);
    free(ids);
    return false;
  }

  int32_t vocab = loaded->config.vocab_size;
  float *logits = malloc((size_t)vocab * sizeof *logits);
  size_t piece_capacity = tokenizer_decode_capacity(tokenizer);
  char *piece = malloc(piece_capacity);
  iq_session_t *session = NULL;
  bool ok = logits && piece;
  if (!ok) {
    fprintf(stderr, "iq-run: error: out of memory for %d logits\n", vocab);
  }
  iq_status_t status =
      ok ? api->session_create(loaded->model, (int32_t)count + max_tokens, &session) : IQ_OK;
  ok = ok && (status == IQ_OK || report_status(api, "iq_session_create", status));

  double start = now_seconds();
  if (ok) {
    status = api->session_forward(session, ids, (int32_t)count, 0, logits, 1);
    ok = status == IQ_OK || report_status(api, "iq_session_forward (prompt)", status);
  }
  double prompt_done = now_seconds();
  if (ok) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  int32_t position = (int32_t)count;
  int32_t previous = ids[count - 1];
  int32_t generated = 0;
  uint64_t state = seed ? seed : (uint64_t)time(NULL) | 1u;
  while (ok && generated < max_tokens) {
    int32_t next = sample(logits, vocab, temperature, &state);
    ++generated;
    if (next == tokenizer->eos_id) {
      break;
    }
    tokenizer_decode(tokenizer, previous, next, piece, piece_capacity);
    fputs(piece, stdout);
    fflush(stdout);
    previous = next;
    if (generated == max_tokens) {
      break; /* its logits would go unused */
    }
    status = api->session_forward(session, &next, 1, position++, logits, 1);
    ok = status == IQ_OK || report_status(api, "iq_session_forward (decode)", status);
  }
  double end = now_seconds();
  if (ok) {
    printf("\n");
    fflush(stdout); /* so the text ends before the statistics on a shared terminal */
    fprintf(stderr, "prompt: %zu tokens in %.3f s; generated %d tokens, %.2f tokens/s\n", count,
            prompt_done - start, generated,
            end > prompt_done ? generated / (end - prompt_done) : 0.0);
  }
  api->session_destroy(session);
  free(piece);
  free(logits);
  free(ids);
  return ok;
}

/* Adds the negative log-likelihood of `target` under `row` to `*total`. */
static void add_nll(const float *row, int32_t vocab, int32_t target, double *total) {
  float max = row[argmax(row, vocab)];
  double sum = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    sum += exp((double)row[i] - max);
  }
  *total += log(sum) - ((double)row[target] - max);
}

/* Scores one window: tokens[0] is BOS, and every later token is
 * predicted from the ones before it. */
static bool score_window(loaded_model_t *loaded, iq_session_t *session, const int32_t *tokens,
                         int32_t length, float *logits, double *nll) {
  const model_api_t *api = &loaded->api;
  int32_t vocab = loaded->config.vocab_size;
  iq_status_t status = api->session_reset(session);
  if (status != IQ_OK) {
    return report_status(api, "iq_session_reset", status);
  }
  for (int32_t start = 0; start < length - 1; start += PERPLEXITY_CHUNK) {
    int32_t chunk = length - 1 - start < PERPLEXITY_CHUNK ? length - 1 - start : PERPLEXITY_CHUNK;
    status = api->session_forward(session, tokens + start, chunk, start, logits, 0);
    if (status != IQ_OK) {
      return report_status(api, "iq_session_forward", status);
    }
    for (int32_t j = 0; j < chunk; ++j) {
      add_nll(logits + (size_t)j * (size_t)vocab, vocab, tokens[start + j + 1], nll);
    }
  }
  return true;
}

bool run_perplexity(loaded_model_t *loaded, const tokenizer_t *tokenizer, const char *path,
                    int32_t context, int32_t windows) {
  if (!check_vocabulary(loaded, tokenizer)) {
    return false;
  }
  /* Windows start with BOS when the tokenizer adds one to text; otherwise
   * a window's first token is context for the others and is not scored. */
  bool start_with_bos = tokenizer->add_bos && tokenizer->bos_id >= 0;
  iq_error_t *error = NULL;
  char *text = iq_read_text_file(path, NULL, &error);
  int32_t *ids = NULL;
  size_t count = 0;
  if (!text || !tokenizer_encode(tokenizer, text, false, &ids, &count, &error)) {
    iq_error_print(error, "iq-run", stderr);
    iq_error_destroy(error);
    free(text);
    return false;
  }
  free(text);
  if (count == 0) {
    fprintf(stderr, "iq-run: error: %s: the text has no tokens to score\n", path);
    free(ids);
    return false;
  }

  const model_api_t *api = &loaded->api;
  int32_t vocab = loaded->config.vocab_size;
  int32_t *window = malloc((size_t)context * sizeof *window);
  float *logits = malloc((size_t)PERPLEXITY_CHUNK * (size_t)vocab * sizeof *logits);
  iq_session_t *session = NULL;
  bool ok = window && logits;
  if (!ok) {
    fprintf(stderr, "iq-run: error: out of memory for a %d-token window\n", context);
  }
  iq_status_t status = ok ? api->session_create(loaded->model, context, &session) : IQ_OK;
  ok = ok && (status == IQ_OK || report_status(api, "iq_session_create", status));

  /* Each window is BOS and the next context - 1 tokens of the text, or
   * the next context tokens without BOS. */
  double nll = 0.0;
  size_t scored = 0;
  int32_t done = 0;
  size_t lead = start_with_bos ? 1 : 0;
  size_t per_window = (size_t)context - lead;
  for (size_t offset = 0; ok && offset < count && (windows == 0 || done < windows);
       offset += per_window) {
    size_t take = count - offset < per_window ? count - offset : per_window;
    if (take + lead < 2) {
      break; /* a single token has nothing to predict */
    }
    if (start_with_bos) {
      window[0] = tokenizer->bos_id;
    }
    memcpy(window + lead, ids + offset, take * sizeof *ids);
    ok = score_window(loaded, session, window, (int32_t)(take + lead), logits, &nll);
    scored += take + lead - 1;
    ++done;
  }
  if (ok) {
    printf("perplexity: %.4f\n", exp(nll / (double)scored));
    printf("windows: %d, tokens: %zu, context: %d\n", done, scored, context);
  }
  api->session_destroy(session);
  free(logits);
  free(window);
  free(ids);
  return ok;
}

bool run_bench(loaded_model_t *loaded, int32_t prefill, int32_t decode) {
  const model_api_t *api = &loaded->api;
  int32_t vocab = loaded->config.vocab_size;
  int32_t *tokens = malloc((size_t)prefill * sizeof *tokens);
  float *logits = malloc((size_t)vocab * sizeof *logits);
  iq_session_t *session = NULL;
  if (!tokens || !logits) {
    fprintf(stderr, "iq-run: error: out of memory for the benchmark\n");
    free(tokens);
    free(logits);
    return false;
  }
  /* Any valid ids will do: the cost does not depend on their values. */
  for (int32_t i = 0; i < prefill; ++i) {
    tokens[i] = (int32_t)(((int64_t)i * 7919 + 1) % vocab);
  }
  iq_status_t status = api->session_create(loaded->model, prefill + decode, &session);
  bool ok = status == IQ_OK || report_status(api, "iq_session_create", status);

  /* Pass 0 warms up (page faults of the weights, the kernel threads and
   * scratch buffers) and is not timed; pass 1 restarts at position 0. */
  double start = 0.0, prefill_end = 0.0, decode_end = 0.0;
  for (int pass = 0; ok && pass < 2; ++pass) {
    start = now_seconds();
    status = api->session_forward(session, tokens, prefill, 0, logits, 1);
    ok = status == IQ_OK || report_status(api, "iq_session_forward (prefill)", status);
    prefill_end = now_seconds();
    for (int32_t i = 0; ok && i < decode; ++i) {
      int32_t next = argmax(logits, vocab);
      status = api->session_forward(session, &next, 1, prefill + i, logits, 1);
      ok = status == IQ_OK || report_status(api, "iq_session_forward (decode)", status);
    }
    decode_end = now_seconds();
  }
  if (ok) {
    double prefill_time = prefill_end - start;
    double decode_time = decode_end - prefill_end;
    printf("prefill: %.2f tokens/s (%d tokens in %.3f s)\n",
           prefill_time > 0 ? prefill / prefill_time : 0.0, prefill, prefill_time);
    printf("decode: %.2f tokens/s (%d tokens in %.3f s)\n",
           decode_time > 0 && decode > 0 ? decode / decode_time : 0.0, decode, decode_time);
  }
  api->session_destroy(session);
  free(tokens);
  free(logits);
  return ok;
}
