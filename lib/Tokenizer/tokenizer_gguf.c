/* The vocabulary inside a GGUF file (versions 2 and 3), read from the
 * key-value metadata at the start of the file as described by ggml's
 * docs/gguf.md: a "GGUF" magic, a u32 version, u64 tensor and key-value
 * counts, then per key a string name, a u32 value type and the value.
 * Strings are a u64 length and the bytes; arrays a u32 element type, a
 * u64 count and the elements. Everything is little endian. Tensor data
 * is not read. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

enum gguf_type {
  GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
  GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
  GGUF_I64 = 11, GGUF_F64 = 12,
};

#define MAX_VOCAB (1 << 24)

typedef struct reader {
  const char *path;
  const uint8_t *data;
  size_t size;
  size_t offset;
  iq_error_t **error;
} reader_t;

static bool truncated(reader_t *reader) {
  return iq_error_set(reader->error, reader->path, NULL,
                      "the file is truncated or not a GGUF file",
                      "GGUF metadata ends early at byte %zu", reader->offset);
}

static bool read_bytes(reader_t *reader, void *out, size_t count) {
  if (reader->size - reader->offset < count) {
    return truncated(reader);
  }
  memcpy(out, reader->data + reader->offset, count);
  reader->offset += count;
  return true;
}

static bool read_u32(reader_t *reader, uint32_t *value) {
  uint8_t bytes[4] = {0};
  if (!read_bytes(reader, bytes, 4)) {
    return false;
  }
  *value = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
           (uint32_t)bytes[3] << 24;
  return true;
}

static bool read_u64(reader_t *reader, uint64_t *value) {
  uint32_t low;
  uint32_t high;
  if (!read_u32(reader, &low) || !read_u32(reader, &high)) {
    return false;
  }
  *value = (uint64_t)high << 32 | low;
  return true;
}

/* Points `*text` into the file; the string is not NUL-terminated. */
static bool read_string(reader_t *reader, const char **text, size_t *length) {
  uint64_t size;
  if (!read_u64(reader, &size)) {
    return false;
  }
  if (size > reader->size - reader->offset) {
    return truncated(reader);
  }
  *text = (const char *)reader->data + reader->offset;
  *length = (size_t)size;
  reader->offset += (size_t)size;
  return true;
}

static size_t scalar_size(uint32_t type) {
  switch (type) {
  case GGUF_U8: case GGUF_I8: case GGUF_BOOL:
    return 1;
  case GGUF_U16: case GGUF_I16:
    return 2;
  case GGUF_U32: case GGUF_I32: case GGUF_F32:
    return 4;
  case GGUF_U64: case GGUF_I64: case GGUF_F64:
    return 8;
  default:
    return 0;
  }
}

static bool skip_value(reader_t *reader, uint32_t type, const char *key, size_t key_length) {
  size_t size = scalar_size(type);
  if (size > 0) {
    if (reader->size - reader->offset < size) {
      return truncated(reader);
    }
    reader->offset += size;
    return true;
  }
  if (type == GGUF_STRING) {
    const char *text;
    size_t length;
    return read_string(reader, &text, &length);
  }
  if (type == GGUF_ARRAY) {
    uint32_t element_type;
    uint64_t count;
    if (!read_u32(reader, &element_type) || !read_u64(reader, &count)) {
      return false;
    }
    size_t element_size = scalar_size(element_type);
    if (element_size > 0) {
      if (count > (reader->size - reader->offset) / element_size) {
        return truncated(reader);
      }
      reader->offset += (size_t)count * element_size;
      return true;
    }
    if (element_type == GGUF_STRING) {
      for (uint64_t i = 0; i < count; ++i) {
        if (!skip_value(reader, GGUF_STRING, key, key_length)) {
          return false;
        }
      }
      return true;
    }
  }
  return iq_error_set(reader->error, reader->path, NULL, "the file is not a valid GGUF file",
                      "metadata key \"%.*s\" has unsupported value type %u", (int)key_length, key,
                      type);
}

/* The keys this loader uses; array values point into the file. */
typedef struct vocabulary {
  const char *model;
  size_t model_length;
  const char *pre;
  size_t pre_length;
  size_t tokens_offset;   /* first string of tokenizer.ggml.tokens, or 0 */
  uint64_t token_count;
  size_t scores_offset;   /* first f32 of tokenizer.ggml.scores, or 0 */
  uint64_t score_count;
  size_t types_offset;    /* first i32 of tokenizer.ggml.token_type, or 0 */
  uint64_t type_count;
  size_t merges_offset;   /* first string of tokenizer.ggml.merges, or 0 */
  uint64_t merge_count;
  int64_t bos_id;
  int64_t eos_id;
  int64_t unk_id;
  int add_space_prefix;   /* -1 when absent */
  int add_bos;            /* tokenizer.ggml.add_bos_token, -1 when absent */
} vocabulary_t;

static bool key_is(const char *key, size_t length, const char *name) {
  return strlen(name) == length && memcmp(key, name, length) == 0;
}

/* Records an array value's element offset and count, then skips it. */
static bool read_array(reader_t *reader, uint32_t type, uint32_t expected, const char *key,
                       size_t key_length, size_t *offset, uint64_t *count) {
  if (type != GGUF_ARRAY) {
    return iq_error_set(reader->error, reader->path, NULL, NULL,
                        "metadata key \"%.*s\" has type %u, expected an array", (int)key_length,
                        key, type);
  }
  size_t start = reader->offset;
  uint32_t element_type;
  if (!read_u32(reader, &element_type) || !read_u64(reader, count)) {
    return false;
  }
  if (element_type != expected) {
    return iq_error_set(reader->error, reader->path, NULL, NULL,
                        "metadata key \"%.*s\" holds elements of type %u, expected %u",
                        (int)key_length, key, element_type, expected);
  }
  *offset = reader->offset;
  reader->offset = start;
  return skip_value(reader, type, key, key_length);
}

static bool read_integer(reader_t *reader, uint32_t type, int64_t *value) {
  uint64_t raw = 0;
  size_t size = scalar_size(type);
  if (type == GGUF_F32 || type == GGUF_F64 || type == GGUF_BOOL || size == 0) {
    return iq_error_set(reader->error, reader->path, NULL, NULL,
                        "token id metadata has type %u, expected an integer", type);
  }
  uint8_t bytes[8] = {0};
  if (!read_bytes(reader, bytes, size)) {
    return false;
  }
  for (size_t i = 0; i < size; ++i) {
    raw |= (uint64_t)bytes[i] << (8 * i);
  }
  *value = (int64_t)raw;
  return true;
}

static bool read_metadata(reader_t *reader, vocabulary_t *vocabulary) {
  uint32_t version;
  uint64_t tensor_count;
  uint64_t key_count;
  reader->offset = 4;
  if (!read_u32(reader, &version) || !read_u64(reader, &tensor_count) ||
      !read_u64(reader, &key_count)) {
    return false;
  }
  if (version != 2 && version != 3) {
    return iq_error_set(reader->error, reader->path, NULL,
                        "convert the model with a current llama.cpp",
                        "GGUF version %u is not supported (versions 2 and 3 are)", version);
  }
  for (uint64_t k = 0; k < key_count; ++k) {
    const char *key;
    size_t key_length;
    uint32_t type;
    if (!read_string(reader, &key, &key_length) || !read_u32(reader, &type)) {
      return false;
    }
    bool ok;
    if (key_is(key, key_length, "tokenizer.ggml.model") && type == GGUF_STRING) {
      ok = read_string(reader, &vocabulary->model, &vocabulary->model_length);
    } else if (key_is(key, key_length, "tokenizer.ggml.pre") && type == GGUF_STRING) {
      ok = read_string(reader, &vocabulary->pre, &vocabulary->pre_length);
    } else if (key_is(key, key_length, "tokenizer.ggml.tokens")) {
      ok = read_array(reader, type, GGUF_STRING, key, key_length, &vocabulary->tokens_offset,
                      &vocabulary->token_count);
    } else if (key_is(key, key_length, "tokenizer.ggml.scores")) {
      ok = read_array(reader, type, GGUF_F32, key, key_length, &vocabulary->scores_offset,
                      &vocabulary->score_count);
    } else if (key_is(key, key_length, "tokenizer.ggml.token_type")) {
      ok = read_array(reader, type, GGUF_I32, key, key_length, &vocabulary->types_offset,
                      &vocabulary->type_count);
    } else if (key_is(key, key_length, "tokenizer.ggml.merges")) {
      ok = read_array(reader, type, GGUF_STRING, key, key_length, &vocabulary->merges_offset,
                      &vocabulary->merge_count);
    } else if (key_is(key, key_length, "tokenizer.ggml.bos_token_id")) {
      ok = read_integer(reader, type, &vocabulary->bos_id);
    } else if (key_is(key, key_length, "tokenizer.ggml.eos_token_id")) {
      ok = read_integer(reader, type, &vocabulary->eos_id);
    } else if (key_is(key, key_length, "tokenizer.ggml.unknown_token_id")) {
      ok = read_integer(reader, type, &vocabulary->unk_id);
    } else if (key_is(key, key_length, "tokenizer.ggml.add_bos_token") && type == GGUF_BOOL) {
      uint8_t flag;
      ok = read_bytes(reader, &flag, 1);
      vocabulary->add_bos = flag != 0;
    } else if (key_is(key, key_length, "tokenizer.ggml.add_space_prefix") && type == GGUF_BOOL) {
      uint8_t flag;
      ok = read_bytes(reader, &flag, 1);
      vocabulary->add_space_prefix = flag != 0;
    } else {
      ok = skip_value(reader, type, key, key_length);
    }
    if (!ok) {
      return false;
    }
  }
  return true;
}

static uint32_t load_u32(const uint8_t *bytes) {
  return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 |
         (uint32_t)bytes[3] << 24;
}

static bool fill_pieces(reader_t *reader, const vocabulary_t *vocabulary, tokenizer_t *tokenizer) {
  reader->offset = vocabulary->tokens_offset;
  for (int32_t id = 0; id < tokenizer->vocab_size; ++id) {
    const char *text;
    size_t length;
    if (!read_string(reader, &text, &length)) {
      return false;
    }
    tokenizer->pieces[id] = malloc(length + 1);
    if (!tokenizer->pieces[id]) {
      return iq_error_set(reader->error, reader->path, NULL, NULL, "out of memory");
    }
    memcpy(tokenizer->pieces[id], text, length);
    tokenizer->pieces[id][length] = '\0';
    tokenizer->piece_lengths[id] = (uint32_t)length;
    if (vocabulary->scores_offset && tokenizer->scores) {
      memcpy(&tokenizer->scores[id], reader->data + vocabulary->scores_offset + 4 * (size_t)id, 4);
    }
    if (vocabulary->types_offset) {
      uint32_t type = load_u32(reader->data + vocabulary->types_offset + 4 * (size_t)id);
      tokenizer->types[id] = type >= TOKEN_NORMAL && type <= TOKEN_BYTE ? (uint8_t)type : TOKEN_UNUSED;
    }
  }
  return true;
}

/* Stores the merges ("LEFT RIGHT" strings) as "LEFT\x1fRIGHT" keys. */
static bool fill_merges(reader_t *reader, const vocabulary_t *vocabulary, tokenizer_t *tokenizer) {
  reader->offset = vocabulary->merges_offset;
  size_t total = 0;
  for (uint64_t i = 0; i < vocabulary->merge_count; ++i) {
    const char *text;
    size_t length;
    if (!read_string(reader, &text, &length)) {
      return false;
    }
    total += length + 1;
  }
  tokenizer->merge_keys = malloc(total + 1);
  if (!tokenizer->merge_keys) {
    return iq_error_set(reader->error, reader->path, NULL, NULL, "out of memory for merges");
  }
  reader->offset = vocabulary->merges_offset;
  char *out = tokenizer->merge_keys;
  for (uint64_t i = 0; i < vocabulary->merge_count; ++i) {
    const char *text;
    size_t length;
    read_string(reader, &text, &length);
    const char *space = memchr(text, ' ', length);
    if (!space) {
      return iq_error_set(reader->error, reader->path, "tokenizer.ggml.merges", NULL,
                          "merge %llu has no space between its two pieces",
                          (unsigned long long)i);
    }
    memcpy(out, text, length);
    out[space - text] = '\x1f';
    if (!string_map_put(&tokenizer->merge_ranks, out, length, (int32_t)i)) {
      return iq_error_set(reader->error, reader->path, NULL, NULL, "out of memory for merges");
    }
    out += length + 1;
  }
  return true;
}

/* Checks that the arrays this tokenizer model needs are present and that
 * their counts agree. */
static bool check_vocabulary(reader_t *reader, const vocabulary_t *vocabulary, bool bpe) {
  static const char hint[] = "pass a GGUF file that contains its tokenizer";
  if (!vocabulary->model) {
    return iq_error_set(reader->error, reader->path, NULL, hint,
                        "has no tokenizer.ggml.model metadata");
  }
  if (!vocabulary->tokens_offset || vocabulary->token_count < 3 ||
      vocabulary->token_count > MAX_VOCAB) {
    return iq_error_set(reader->error, reader->path, "tokenizer.ggml.tokens", hint,
                        "missing or has %llu tokens, expected 3 to %d",
                        (unsigned long long)vocabulary->token_count, MAX_VOCAB);
  }
  if (!bpe && vocabulary->score_count != vocabulary->token_count) {
    return iq_error_set(reader->error, reader->path, "tokenizer.ggml.scores", hint,
                        "has %llu scores for %llu tokens",
                        (unsigned long long)vocabulary->score_count,
                        (unsigned long long)vocabulary->token_count);
  }
  if (vocabulary->types_offset && vocabulary->type_count != vocabulary->token_count) {
    return iq_error_set(reader->error, reader->path, "tokenizer.ggml.token_type", hint,
                        "has %llu types for %llu tokens",
                        (unsigned long long)vocabulary->type_count,
                        (unsigned long long)vocabulary->token_count);
  }
  if (bpe && !vocabulary->merges_offset) {
    return iq_error_set(reader->error, reader->path, "tokenizer.ggml.merges", hint,
                        "missing for a \"gpt2\" tokenizer");
  }
  return true;
}

static int32_t checked_id(int64_t id, int32_t vocab_size) {
  return id >= 0 && id < vocab_size ? (int32_t)id : -1;
}

tokenizer_t *tokenizer_load_gguf(const char *path, const uint8_t *data, size_t size,
                                 iq_error_t **error) {
  reader_t reader = {path, data, size, 0, error};
  vocabulary_t vocabulary = {
      .bos_id = -1, .eos_id = -1, .unk_id = -1, .add_space_prefix = -1, .add_bos = -1};
  if (!read_metadata(&reader, &vocabulary)) {
    return NULL;
  }
  bool sentencepiece = vocabulary.model && key_is(vocabulary.model, vocabulary.model_length, "llama");
  bool bpe = vocabulary.model && key_is(vocabulary.model, vocabulary.model_length, "gpt2");
  if (vocabulary.model && !sentencepiece && !bpe) {
    iq_error_set(error, path, "tokenizer.ggml.model", NULL,
                 "tokenizer model \"%.*s\" is not supported (\"llama\" and \"gpt2\" are)",
                 (int)vocabulary.model_length, vocabulary.model);
    return NULL;
  }
  if (!check_vocabulary(&reader, &vocabulary, bpe)) {
    return NULL;
  }

  int32_t vocab_size = (int32_t)vocabulary.token_count;
  tokenizer_t *tokenizer = tokenizer_create("gguf", vocab_size, sentencepiece, error);
  if (!tokenizer) {
    return NULL;
  }
  bool ok = fill_pieces(&reader, &vocabulary, tokenizer);
  if (ok && bpe) {
    ok = fill_merges(&reader, &vocabulary, tokenizer);
    tokenizer->algorithm = TOKENIZER_BPE_MERGES;
    bool llama3 = vocabulary.pre && key_is(vocabulary.pre, vocabulary.pre_length, "llama-bpe");
    tokenizer->pretokenizer = llama3 ? PRETOKENIZER_LLAMA3 : PRETOKENIZER_GPT2;
    /* LLaMA-3 takes a word that is a whole piece without merging. */
    tokenizer->ignore_merges = llama3;
  } else if (ok) {
    tokenizer->algorithm = TOKENIZER_SENTENCEPIECE_SCORES;
    tokenizer->space_symbol = "\xE2\x96\x81"; /* U+2581, "▁" */
    tokenizer->add_space_prefix = vocabulary.add_space_prefix != 0;
  }
  tokenizer->bos_id = checked_id(vocabulary.bos_id, vocab_size);
  if (vocabulary.add_bos >= 0)
    tokenizer->add_bos = vocabulary.add_bos != 0;
  tokenizer->eos_id = checked_id(vocabulary.eos_id, vocab_size);
  tokenizer->unk_id = checked_id(vocabulary.unk_id, vocab_size);
  if (ok) {
    ok = tokenizer_index(tokenizer, path, error);
  }
  if (!ok) {
    tokenizer_free(tokenizer);
    return NULL;
  }
  return tokenizer;
}
