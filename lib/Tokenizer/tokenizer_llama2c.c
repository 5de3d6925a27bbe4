/* llama2.c's tokenizer.bin: int32 max_token_length, then per token a
 * float32 score, an int32 byte length and the piece's bytes, all little
 * endian. The file has no token count or types: the count is what the
 * file holds, and the types are inferred from the pieces. Its pieces write
 * "▁" as a plain space, and it wraps <s> and </s> in newlines. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Bound on the vocabulary, far above any LLaMA tokenizer, so a corrupt
 * file cannot make the loader allocate without limit. */
#define MAX_VOCAB (1 << 24)

static uint32_t load_u32(const uint8_t *bytes) {
  return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
         (uint32_t)bytes[3] << 24;
}

/* Walks the records once to count them, checking every length. */
static bool count_tokens(const char *path, const uint8_t *data, size_t size, int32_t *count,
                         iq_error_t **error) {
  static const char hint[] = "pass a llama2.c tokenizer.bin, a GGUF file or a tokenizer.json";
  if (size < 4) {
    return iq_error_set(error, path, NULL, hint, "is %zu bytes, too small for a tokenizer", size);
  }
  uint32_t max_length = load_u32(data);
  size_t offset = 4;
  int32_t tokens = 0;
  while (offset < size) {
    if (size - offset < 8) {
      return iq_error_set(error, path, NULL, hint, "token %d is truncated at byte %zu", tokens,
                          offset);
    }
    uint32_t length = load_u32(data + offset + 4);
    if (length > max_length || length > size - offset - 8) {
      return iq_error_set(error, path, NULL, hint,
                          "token %d has length %u at byte %zu, past the file end or the maximum "
                          "token length %u",
                          tokens, length, offset, max_length);
    }
    offset += 8 + length;
    if (++tokens > MAX_VOCAB) {
      return iq_error_set(error, path, NULL, hint, "has more than %d tokens", MAX_VOCAB);
    }
  }
  if (tokens < 3) {
    return iq_error_set(error, path, NULL, hint, "has %d tokens, expected at least 3", tokens);
  }
  *count = tokens;
  return true;
}

/* Sets the type of the special pieces, which llama2.c keeps at ids 0..2
 * as "<unk>", "\n<s>\n" and "\n</s>\n". */
static void mark_special(tokenizer_t *tokenizer, int32_t id) {
  const char *piece = tokenizer->pieces[id];
  size_t length = tokenizer->piece_lengths[id];
  while (length > 0 && *piece == '\n') {
    ++piece;
    --length;
  }
  while (length > 0 && piece[length - 1] == '\n') {
    --length;
  }
  if (length == 5 && memcmp(piece, "<unk>", 5) == 0) {
    tokenizer->types[id] = TOKEN_UNKNOWN;
    tokenizer->unk_id = id;
  } else if (length == 3 && memcmp(piece, "<s>", 3) == 0) {
    tokenizer->types[id] = TOKEN_CONTROL;
    tokenizer->bos_id = id;
  } else if (length == 4 && memcmp(piece, "</s>", 4) == 0) {
    tokenizer->types[id] = TOKEN_CONTROL;
    tokenizer->eos_id = id;
  }
}

tokenizer_t *tokenizer_load_llama2c(const char *path, const uint8_t *data, size_t size,
                                    iq_error_t **error) {
  int32_t count = 0;
  if (!count_tokens(path, data, size, &count, error)) {
    return NULL;
  }
  tokenizer_t *tokenizer = tokenizer_create("llama2.c", count, true, error);
  if (!tokenizer) {
    return NULL;
  }
  size_t offset = 4;
  for (int32_t id = 0; id < count; ++id) {
    float score;
    memcpy(&score, data + offset, sizeof score);
    uint32_t length = load_u32(data + offset + 4);
    char *piece = malloc((size_t)length + 1);
    if (!piece) {
      tokenizer_free(tokenizer);
      iq_error_set(error, path, NULL, NULL, "out of memory reading token %d", id);
      return NULL;
    }
    memcpy(piece, data + offset + 8, length);
    piece[length] = '\0';
    tokenizer->pieces[id] = piece;
    tokenizer->piece_lengths[id] = length;
    tokenizer->scores[id] = score;
    offset += 8 + length;
  }
  for (int32_t id = 0; id < 3; ++id) {
    mark_special(tokenizer, id);
  }
  tokenizer->algorithm = TOKENIZER_SENTENCEPIECE_SCORES;
  tokenizer->space_symbol = " ";
  tokenizer->add_space_prefix = true;
  if (!tokenizer_index(tokenizer, path, error)) {
    tokenizer_free(tokenizer);
    return NULL;
  }
  return tokenizer;
}
