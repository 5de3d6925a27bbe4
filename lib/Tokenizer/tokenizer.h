/* Tokenizers for iq-run and calibration: one interface over three file formats.
 *
 * - llama2.c's tokenizer.bin and the vocabulary inside a GGUF file use
 *   SentencePiece's BPE: pieces with scores, merged best score first.
 * - Hugging Face tokenizer.json uses BPE with a ranked merge list, either
 *   SentencePiece-style (LLaMA-1/2: "▁" for spaces, byte fallback) or
 *   byte-level (GPT-2, LLaMA-3: every byte mapped to a printable char).
 */
#ifndef IQ_TOKENIZER_H
#define IQ_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq/support.h"

/* Token types, numbered as in SentencePiece and GGUF. */
typedef enum token_type {
  TOKEN_NORMAL = 1,
  TOKEN_UNKNOWN = 2,
  TOKEN_CONTROL = 3,
  TOKEN_USER_DEFINED = 4,
  TOKEN_UNUSED = 5,
  TOKEN_BYTE = 6,
} token_type_t;

typedef enum tokenizer_algorithm {
  /* Merge the adjacent pair whose concatenation is the best-scoring piece. */
  TOKENIZER_SENTENCEPIECE_SCORES,
  /* Merge the adjacent pair that comes first in the merge list. */
  TOKENIZER_BPE_MERGES,
} tokenizer_algorithm_t;

typedef enum pretokenizer {
  PRETOKENIZER_NONE,  /* the whole normalized text is one word */
  PRETOKENIZER_GPT2,  /* GPT-2's split pattern, then bytes to chars */
  PRETOKENIZER_LLAMA3 /* LLaMA-3's split pattern, then bytes to chars */
} pretokenizer_t;

/* A hash map from byte strings to int32 values. Keys are not copied. */
typedef struct string_map {
  struct string_map_entry *entries;
  size_t capacity;
  size_t count;
} string_map_t;

typedef struct tokenizer {
  const char *format; /* "llama2.c", "gguf" or "tokenizer.json" */
  tokenizer_algorithm_t algorithm;
  pretokenizer_t pretokenizer;
  int32_t vocab_size;
  char **pieces;          /* vocab_size pieces, NUL-terminated, as stored */
  uint32_t *piece_lengths;
  float *scores;          /* SentencePiece scores; NULL for merge lists */
  uint8_t *types;         /* token_type_t of each piece */
  int32_t bos_id;         /* -1 when the vocabulary has none */
  bool add_bos;           /* whether text starts with BOS; GGUF's add_bos_token */
  int32_t eos_id;
  int32_t unk_id;
  int32_t byte_ids[256];  /* id of "<0xNN>", or -1 */
  /* The text that stands for a space inside pieces: " " for llama2.c and
   * GGUF (converted on load), "▁" for tokenizer.json. */
  const char *space_symbol;
  bool add_space_prefix;  /* prepend the space symbol to non-empty text */
  bool ignore_merges;     /* take a word that is a whole piece as is (LLaMA-3) */
  string_map_t piece_ids; /* pieces text can produce: normal and user-defined */
  string_map_t merge_ranks; /* "LEFT\x1fRIGHT" -> rank, for TOKENIZER_BPE_MERGES */
  char *merge_keys;       /* storage of the merge_ranks keys */
} tokenizer_t;

/* Loads a tokenizer, choosing the format from the file's content: GGUF
 * magic, a JSON object, or else llama2.c's layout. The caller owns the
 * result and frees it with tokenizer_free. */
tokenizer_t *tokenizer_load(const char *path, iq_error_t **error);
void tokenizer_free(tokenizer_t *tokenizer);

/* Encodes `text` (UTF-8), with BOS first when `add_bos` is set and the
 * vocabulary has one. Stores a new array the caller frees in `*ids`. */
bool tokenizer_encode(const tokenizer_t *tokenizer, const char *text, bool add_bos,
                      int32_t **ids, size_t *count, iq_error_t **error);

/* Appends the text of token `id` to `buffer` (capacity `size`, at least
 * 8 bytes more than the longest piece) and returns its length. `previous`
 * is the token before it, or -1: a leading space after BOS or at the
 * start is dropped, because the encoder added it. Control tokens decode
 * to nothing. */
size_t tokenizer_decode(const tokenizer_t *tokenizer, int32_t previous, int32_t id, char *buffer,
                        size_t size);

/* The buffer size tokenizer_decode needs for any token. */
size_t tokenizer_decode_capacity(const tokenizer_t *tokenizer);

/* ---- Used by the format loaders ---------------------------------------- */

/* Allocates the per-token arrays for `vocab_size` tokens, with ids set to
 * -1 and every type TOKEN_NORMAL. */
tokenizer_t *tokenizer_create(const char *format, int32_t vocab_size, bool with_scores,
                              iq_error_t **error);

/* Builds piece_ids and byte_ids from pieces and types, marking "<0xNN>"
 * pieces as bytes. Call after every piece is set. */
bool tokenizer_index(tokenizer_t *tokenizer, const char *path, iq_error_t **error);

/* Returns the id of piece `text`, or -1, searching every piece. */
int32_t tokenizer_find_any(const tokenizer_t *tokenizer, const char *text);

bool string_map_put(string_map_t *map, const char *key, size_t length, int32_t value);
/* Returns the value of `key`, or -1. */
int32_t string_map_get(const string_map_t *map, const char *key, size_t length);
void string_map_free(string_map_t *map);

tokenizer_t *tokenizer_load_llama2c(const char *path, const uint8_t *data, size_t size,
                                    iq_error_t **error);
tokenizer_t *tokenizer_load_gguf(const char *path, const uint8_t *data, size_t size,
                                 iq_error_t **error);
tokenizer_t *tokenizer_load_hf(const char *path, const char *text, iq_error_t **error);

/* Splits `text` into the words a byte-level pre-tokenizer would produce,
 * storing word start offsets and lengths (arrays the caller frees). */
bool pretokenize_byte_level(pretokenizer_t kind, const char *text, size_t length,
                            size_t **starts, size_t **lengths, size_t *count);

#endif /* IQ_TOKENIZER_H */
