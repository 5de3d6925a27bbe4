/* The split patterns of byte-level BPE tokenizers, hand-coded from their
 * regular expressions (alternatives tried in order, as a backtracking
 * regex engine does):
 *
 * GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * LLaMA-3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * NOTE: the Unicode classes are approximated without Unicode tables:
 * letters are ASCII letters and every non-ASCII character outside the
 * whitespace and punctuation ranges below, and numbers are ASCII digits.
 * Text in scripts with their own digits or punctuation can split
 * differently from the reference tokenizers. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Decodes the UTF-8 character at `text[i]`, storing its byte length.
 * Invalid bytes decode as themselves, one byte long. */
static uint32_t decode_utf8(const char *text, size_t length, size_t i, size_t *size) {
  uint8_t lead = (uint8_t)text[i];
  size_t count = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
  if (i + count > length) {
    count = 1;
  }
  /* The lead byte keeps 7, 5, 4 or 3 payload bits for 1 to 4 bytes. */
  static const uint8_t lead_masks[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t codepoint = lead & lead_masks[count];
  for (size_t k = 1; k < count; ++k) {
    uint8_t next = (uint8_t)text[i + k];
    if ((next & 0xC0) != 0x80) {
      *size = 1;
      return lead;
    }
    codepoint = (codepoint << 6) | (next & 0x3Fu);
  }
  *size = count;
  return codepoint;
}

static bool is_space(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

static bool is_number(uint32_t c) { return c >= '0' && c <= '9'; }

static bool is_letter(uint32_t c) {
  if (c < 0x80) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  }
  if (is_space(c)) {
    return false;
  }
  /* Latin-1 punctuation and symbols, except the letters ª, µ and º. */
  if (c <= 0xBF) {
    return c == 0xAA || c == 0xB5 || c == 0xBA;
  }
  if (c == 0xD7 || c == 0xF7) {
    return false;
  }
  /* General Punctuation, symbol blocks up to the Dingbats, CJK
   * punctuation, and the ASCII-like forms of the Halfwidth and Fullwidth
   * block. */
  if ((c >= 0x2010 && c <= 0x2BFF) || (c >= 0x3001 && c <= 0x303F) ||
      (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
      (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65)) {
    return false;
  }
  return true;
}

typedef struct cursor {
  const char *text;
  size_t length;
} cursor_t;

static uint32_t char_at(const cursor_t *cursor, size_t i, size_t *size) {
  return decode_utf8(cursor->text, cursor->length, i, size);
}

/* Returns the end of the run of characters from `i` that satisfy `test`,
 * taking at most `max` of them. */
static size_t run_end(const cursor_t *cursor, size_t i, bool (*test)(uint32_t), size_t max) {
  size_t taken = 0;
  while (i < cursor->length && taken < max) {
    size_t size;
    if (!test(char_at(cursor, i, &size))) {
      break;
    }
    i += size;
    ++taken;
  }
  return i;
}

static bool is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

static bool is_newline(uint32_t c) { return c == '\r' || c == '\n'; }

/* Matches 's, 't, 're, 've, 'm, 'll or 'd at `i`; returns its end or `i`. */
static size_t match_contraction(const cursor_t *cursor, size_t i, bool ignore_case) {
  static const char *const suffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  if (cursor->text[i] != '\'') {
    return i;
  }
  for (size_t s = 0; s < 7; ++s) {
    size_t length = strlen(suffixes[s]);
    if (i + 1 + length > cursor->length) {
      continue;
    }
    bool match = true;
    for (size_t k = 0; k < length && match; ++k) {
      char c = cursor->text[i + 1 + k];
      if (ignore_case && c >= 'A' && c <= 'Z') {
        c = (char)(c - 'A' + 'a');
      }
      match = c == suffixes[s][k];
    }
    if (match) {
      return i + 1 + length;
    }
  }
  return i;
}

/* Matches ` ?CLASS+` at `i`; returns its end or `i`. */
static size_t match_space_then_run(const cursor_t *cursor, size_t i, bool (*test)(uint32_t)) {
  size_t start = cursor->text[i] == ' ' ? i + 1 : i;
  size_t end = run_end(cursor, start, test, SIZE_MAX);
  return end > start ? end : i;
}

/* Matches `\s+(?!\S)` then `\s+` at `i`: a whitespace run, leaving its
 * last character to the next word when a non-space follows. */
static size_t match_spaces(const cursor_t *cursor, size_t i) {
  size_t end = run_end(cursor, i, is_space, SIZE_MAX);
  if (end == i || end == cursor->length) {
    return end;
  }
  size_t last = i;
  size_t position = i;
  while (position < end) {
    size_t size;
    char_at(cursor, position, &size);
    last = position;
    position += size;
  }
  return last > i ? last : end;
}

static size_t match_gpt2(const cursor_t *cursor, size_t i) {
  size_t end = match_contraction(cursor, i, false);
  if (end == i) {
    end = match_space_then_run(cursor, i, is_letter);
  }
  if (end == i) {
    end = match_space_then_run(cursor, i, is_number);
  }
  if (end == i) {
    end = match_space_then_run(cursor, i, is_other);
  }
  if (end == i) {
    end = match_spaces(cursor, i);
  }
  return end;
}

static size_t match_llama3(const cursor_t *cursor, size_t i) {
  size_t end = match_contraction(cursor, i, true);
  size_t size;
  uint32_t first = char_at(cursor, i, &size);
  if (end == i) {
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_newline(first) && !is_letter(first) && !is_number(first)) {
      size_t letters = run_end(cursor, i + size, is_letter, SIZE_MAX);
      end = letters > i + size ? letters : i;
    }
    if (end == i) {
      end = run_end(cursor, i, is_letter, SIZE_MAX);
    }
  }
  if (end == i) {
    end = run_end(cursor, i, is_number, 3);
  }
  if (end == i) {
    size_t others = match_space_then_run(cursor, i, is_other);
    end = others > i ? run_end(cursor, others, is_newline, SIZE_MAX) : i;
  }
  if (end == i) {
    /* \s*[\r\n]+ ends after the last newline of the whitespace run. */
    size_t run = run_end(cursor, i, is_space, SIZE_MAX);
    for (size_t position = i; position < run;) {
      uint32_t c = char_at(cursor, position, &size);
      position += size;
      if (is_newline(c)) {
        end = position;
      }
    }
  }
  if (end == i) {
    end = match_spaces(cursor, i);
  }
  return end;
}

bool pretokenize_byte_level(pretokenizer_t kind, const char *text, size_t length,
                            size_t **starts, size_t **lengths, size_t *count) {
  *starts = malloc((length + 1) * sizeof **starts);
  *lengths = malloc((length + 1) * sizeof **lengths);
  if (!*starts || !*lengths) {
    free(*starts);
    free(*lengths);
    return false;
  }
  cursor_t cursor = {text, length};
  size_t words = 0;
  size_t i = 0;
  while (i < length) {
    size_t end = kind == PRETOKENIZER_LLAMA3 ? match_llama3(&cursor, i) : match_gpt2(&cursor, i);
    if (end == i) {
      size_t size;
      char_at(&cursor, i, &size);
      end = i + size; /* no alternative matched: take one character */
    }
    (*starts)[words] = i;
    (*lengths)[words] = end - i;
    ++words;
    i = end;
  }
  *count = words;
  return true;
}
