/* Float kernels as MLIR source. Loops are scf.for over memrefs; LLVM's
 * loop vectorizer turns the inner loops into SIMD code, helped by
 * `fastmath<fast>` on the reductions, which allows reassociating them.
 * NOTE: these are the reference-quality float kernels; the int4 kernels
 * of the quantized path are separate. */
#include "Kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void iq_kernel_set_free(iq_kernel_set_t *set) {
  free(set->names);
  set->names = NULL;
  set->count = set->capacity = 0;
}

bool iq_kernel_claim(iq_kernel_set_t *set, const char *name, iq_text_t *text) {
  for (size_t i = 0; i < set->count; ++i)
    if (strcmp(set->names[i], name) == 0)
      return false;
  if (set->count == set->capacity) {
    size_t capacity = set->capacity ? set->capacity * 2 : 32;
    void *grown = realloc(set->names, capacity * sizeof *set->names);
    if (!grown) {
      text->failed = true;
      return false;
    }
    set->names = grown;
    set->capacity = capacity;
  }
  snprintf(set->names[set->count++], IQ_KERNEL_NAME_SIZE, "%s", name);
  return true;
}

/* Loads `source` (an element of type `type`) into `result` as f32. */
static void load_f32(iq_text_t *text, const char *result, const char *source,
                     const char *memref_type, const char *type) {
  if (strcmp(type, "f32") == 0) {
    iq_text_printf(text, "        %s = memref.load %s : %s\n", result, source, memref_type);
  } else {
    iq_text_printf(text, "        %s_raw = memref.load %s : %s\n", result, source, memref_type);
    iq_text_printf(text, "        %s = arith.extf %s_raw : %s to f32\n", result, result, type);
  }
}

/* Every kernel has internal linkage: the library exports only the
 * runtime's interface and iq_model_forward. */
static const char *prologue =
    "    %c0 = arith.constant 0 : index\n"
    "    %c1 = arith.constant 1 : index\n"
    "    %zero = arith.constant 0.0 : f32\n";

void iq_kernel_embedding(iq_text_t *text, iq_kernel_set_t *set, int64_t vocab, int64_t hidden,
                         const char *weight_type, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_embedding_%lldx%lld_%s", (long long)vocab,
           (long long)hidden, weight_type);
  if (!iq_kernel_claim(set, name, text))
    return;
  char table_type[96];
  snprintf(table_type, sizeof table_type, "memref<%lldx%lldx%s>", (long long)vocab,
           (long long)hidden, weight_type);
  iq_text_printf(text,
                 "  func.func private @%s(%%table: %s, %%ids: memref<1x?xi64>, "
                 "%%y: memref<1x?x%lldxf32>) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
                 "    %%width = arith.constant %lld : index\n"
                 "    %%tokens = memref.dim %%ids, %%c1 : memref<1x?xi64>\n"
                 "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
                 "      %%id64 = memref.load %%ids[%%c0, %%t] : memref<1x?xi64>\n"
                 "      %%id = arith.index_cast %%id64 : i64 to index\n"
                 "      scf.for %%h = %%c0 to %%width step %%c1 {\n",
                 name, table_type, (long long)hidden, prologue, (long long)hidden);
  load_f32(text, "%w", "%table[%id, %h]", table_type, weight_type);
  iq_text_printf(text,
                 "        memref.store %%w, %%y[%%c0, %%t, %%h] : memref<1x?x%lldxf32>\n"
                 "      }\n    }\n    return\n  }\n",
                 (long long)hidden);
}

void iq_kernel_rms_norm(iq_text_t *text, iq_kernel_set_t *set, int64_t width, double epsilon,
                        const char *gain_type, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_rms_norm_%lld_%s_%08x", (long long)width,
           gain_type ? gain_type : "none", (unsigned)(epsilon * 1e12));
  if (!iq_kernel_claim(set, name, text))
    return;
  char row_type[64], gain_memref[64];
  snprintf(row_type, sizeof row_type, "memref<1x?x%lldxf32>", (long long)width);
  snprintf(gain_memref, sizeof gain_memref, "memref<%lldx%s>", (long long)width,
           gain_type ? gain_type : "f32");
  iq_text_printf(text, "  func.func private @%s(%%x: %s, ", name, row_type);
  if (gain_type)
    iq_text_printf(text, "%%gain: %s, ", gain_memref);
  iq_text_printf(text,
                 "%%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
                 "    %%width = arith.constant %lld : index\n"
                 "    %%count = arith.constant %lld.0 : f32\n"
                 "    %%epsilon = arith.constant %.9e : f32\n"
                 "    %%tokens = memref.dim %%x, %%c1 : %s\n"
                 "    %%width16 = arith.constant %lld : index\n"
                 "    %%c16 = arith.constant 16 : index\n"
                 "    %%zero16 = arith.constant dense<0.0> : vector<16xf32>\n"
                 "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
                 /* The squares in 16 lanes, the lanes summed in order, then
                  * the tail: the same order on every target. */
                 "      %%lanes = scf.for %%h = %%c0 to %%width16 step %%c16 "
                 "iter_args(%%acc = %%zero16) -> (vector<16xf32>) {\n"
                 "        %%v16 = vector.load %%x[%%c0, %%t, %%h] : %s, vector<16xf32>\n"
                 "        %%sq16 = arith.mulf %%v16, %%v16 : vector<16xf32>\n"
                 "        %%acc_next = arith.addf %%acc, %%sq16 : vector<16xf32>\n"
                 "        scf.yield %%acc_next : vector<16xf32>\n"
                 "      }\n"
                 "      %%lane_sum = vector.reduction <add>, %%lanes : vector<16xf32> into f32\n"
                 "      %%squares = scf.for %%h = %%width16 to %%width step %%c1 "
                 "iter_args(%%sum = %%lane_sum) -> (f32) {\n"
                 "        %%v = memref.load %%x[%%c0, %%t, %%h] : %s\n"
                 "        %%v2 = arith.mulf %%v, %%v : f32\n"
                 "        %%next = arith.addf %%sum, %%v2 : f32\n"
                 "        scf.yield %%next : f32\n"
                 "      }\n"
                 "      %%mean = arith.divf %%squares, %%count : f32\n"
                 "      %%shifted = arith.addf %%mean, %%epsilon : f32\n"
                 "      %%root = math.sqrt %%shifted : f32\n"
                 "      %%one = arith.constant 1.0 : f32\n"
                 "      %%inverse = arith.divf %%one, %%root : f32\n"
                 "      scf.for %%h = %%c0 to %%width step %%c1 {\n"
                 "        %%v = memref.load %%x[%%c0, %%t, %%h] : %s\n"
                 "        %%n = arith.mulf %%v, %%inverse : f32\n",
                 row_type, prologue, (long long)width, (long long)width, epsilon, row_type,
                 (long long)(width - width % 16), row_type, row_type, row_type);
  if (gain_type) {
    load_f32(text, "%g", "%gain[%h]", gain_memref, gain_type);
    iq_text_printf(text, "        %%o = arith.mulf %%n, %%g : f32\n");
  } else {
    iq_text_printf(text, "        %%o = arith.addf %%n, %%zero : f32\n");
  }
  iq_text_printf(text, "        memref.store %%o, %%y[%%c0, %%t, %%h] : %s\n"
                       "      }\n    }\n    return\n  }\n",
                 row_type);
}

void iq_kernel_linear(iq_text_t *text, iq_kernel_set_t *set, int64_t in, int64_t out,
                      const char *weight_type, bool stored_in_out, bool parallel, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_linear_%lldx%lld_%s_%s%s", (long long)in, (long long)out,
           weight_type, stored_in_out ? "kn" : "nk", parallel ? "_parallel" : "");
  if (!iq_kernel_claim(set, name, text))
    return;
  char x_type[64], y_type[64], w_type[96];
  snprintf(x_type, sizeof x_type, "memref<1x?x%lldxf32>", (long long)in);
  snprintf(y_type, sizeof y_type, "memref<1x?x%lldxf32>", (long long)out);
  if (stored_in_out)
    snprintf(w_type, sizeof w_type, "memref<%lldx%lldx%s>", (long long)in, (long long)out,
             weight_type);
  else
    snprintf(w_type, sizeof w_type, "memref<%lldx%lldx%s>", (long long)out, (long long)in,
             weight_type);
  /* Output columns are split into blocks; with `parallel` the blocks are
   * an scf.parallel loop (OpenMP threads). Each block runs over all tokens,
   * so its slice of W stays in cache during prefill. */
  iq_text_printf(text,
                 "  func.func private @%s(%%x: %s {llvm.noalias}, %%w: %s {llvm.noalias}, %%y: %s {llvm.noalias}) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
                 "    %%in = arith.constant %lld : index\n"
                 "    %%out = arith.constant %lld : index\n"
                 "    %%block = arith.constant %d : index\n"
                 "    %%tokens = memref.dim %%x, %%c1 : %s\n",
                 name, x_type, w_type, y_type, prologue, (long long)in, (long long)out,
                 IQ_KERNEL_COLUMN_BLOCK, x_type);
  if (parallel)
    iq_text_printf(text, "    scf.parallel (%%first) = (%%c0) to (%%out) step (%%block) {\n");
  else
    iq_text_printf(text, "    scf.for %%first = %%c0 to %%out step %%block {\n");
  iq_text_printf(text,
                 "      %%after = arith.addi %%first, %%block : index\n"
                 "      %%last = arith.minui %%after, %%out : index\n"
                 "      scf.for %%t = %%c0 to %%tokens step %%c1 {\n");
  if (stored_in_out) {
    /* W is [in, out]: accumulate rows of W scaled by x, so the inner loop
     * walks contiguous memory and needs no reassociation to vectorize. */
    iq_text_printf(text,
                   "      scf.for %%n = %%first to %%last step %%c1 {\n"
                   "        memref.store %%zero, %%y[%%c0, %%t, %%n] : %s\n"
                   "      }\n"
                   "      scf.for %%k = %%c0 to %%in step %%c1 {\n"
                   "        %%xv = memref.load %%x[%%c0, %%t, %%k] : %s\n"
                   "        scf.for %%n = %%first to %%last step %%c1 {\n",
                   y_type, x_type);
    load_f32(text, "%wv", "%w[%k, %n]", w_type, weight_type);
    iq_text_printf(text,
                   "        %%acc = memref.load %%y[%%c0, %%t, %%n] : %s\n"
                   "        %%p = arith.mulf %%xv, %%wv : f32\n"
                   "        %%s = arith.addf %%acc, %%p : f32\n"
                   "        memref.store %%s, %%y[%%c0, %%t, %%n] : %s\n"
                   "        }\n      }\n",
                   y_type, y_type);
  } else {
    iq_text_printf(text,
                   "      scf.for %%n = %%first to %%last step %%c1 {\n"
                   "        %%dot = scf.for %%k = %%c0 to %%in step %%c1 "
                   "iter_args(%%sum = %%zero) -> (f32) {\n"
                   "        %%xv = memref.load %%x[%%c0, %%t, %%k] : %s\n",
                   x_type);
    load_f32(text, "%wv", "%w[%n, %k]", w_type, weight_type);
    iq_text_printf(text,
                   "        %%p = arith.mulf %%xv, %%wv fastmath<fast> : f32\n"
                   "        %%s = arith.addf %%sum, %%p fastmath<fast> : f32\n"
                   "        scf.yield %%s : f32\n"
                   "        }\n"
                   "        memref.store %%dot, %%y[%%c0, %%t, %%n] : %s\n"
                   "      }\n",
                   y_type);
  }
  iq_text_printf(text, "      }\n%s    }\n    return\n  }\n", parallel ? "      scf.reduce\n" : "");
}

void iq_kernel_rope(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t head_dim,
                    bool interleaved, const char *frequencies, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_rope_%lld_%lld_%s_%s", (long long)width,
           (long long)head_dim, interleaved ? "pairs" : "halves", frequencies);
  if (!iq_kernel_claim(set, name, text))
    return;
  int64_t half = head_dim / 2;
  char row_type[64], table_type[64];
  snprintf(row_type, sizeof row_type, "memref<1x?x%lldxf32>", (long long)width);
  snprintf(table_type, sizeof table_type, "memref<%lldxf32>", (long long)half);
  iq_text_printf(
      text,
      "  func.func private @%s(%%x: %s, %%positions: memref<1x?xi64>, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
      "    %%heads = arith.constant %lld : index\n"
      "    %%half = arith.constant %lld : index\n"
      "    %%head_dim = arith.constant %lld : index\n"
      "    %%table = memref.get_global @%s : %s\n"
      "    %%tokens = memref.dim %%x, %%c1 : %s\n"
      "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "      %%p64 = memref.load %%positions[%%c0, %%t] : memref<1x?xi64>\n"
      "      %%p = arith.sitofp %%p64 : i64 to f32\n"
      "      scf.for %%i = %%c0 to %%half step %%c1 {\n"
      "        %%frequency = memref.load %%table[%%i] : %s\n"
      "        %%angle = arith.mulf %%p, %%frequency : f32\n"
      /* cos and sin in double, rounded to float: the float functions of
       * the C libraries round differently on x86-64 and AArch64. */
      "        %%angle64 = arith.extf %%angle : f32 to f64\n"
      "        %%cos64 = math.cos %%angle64 : f64\n"
      "        %%sin64 = math.sin %%angle64 : f64\n"
      "        %%cos = arith.truncf %%cos64 : f64 to f32\n"
      "        %%sin = arith.truncf %%sin64 : f64 to f32\n"
      "        scf.for %%h = %%c0 to %%heads step %%c1 {\n"
      "          %%base = arith.muli %%h, %%head_dim : index\n",
      name, row_type, row_type, prologue, (long long)(width / head_dim), (long long)half,
      (long long)head_dim, frequencies, table_type, row_type, table_type);
  if (interleaved)
    iq_text_printf(text, "          %%i2 = arith.addi %%i, %%i : index\n"
                         "          %%first = arith.addi %%base, %%i2 : index\n"
                         "          %%second = arith.addi %%first, %%c1 : index\n");
  else
    iq_text_printf(text, "          %%first = arith.addi %%base, %%i : index\n"
                         "          %%second = arith.addi %%first, %%half : index\n");
  iq_text_printf(text,
                 "          %%a = memref.load %%x[%%c0, %%t, %%first] : %s\n"
                 "          %%b = memref.load %%x[%%c0, %%t, %%second] : %s\n"
                 "          %%ac = arith.mulf %%a, %%cos : f32\n"
                 "          %%bs = arith.mulf %%b, %%sin : f32\n"
                 "          %%bc = arith.mulf %%b, %%cos : f32\n"
                 "          %%as = arith.mulf %%a, %%sin : f32\n"
                 "          %%ra = arith.subf %%ac, %%bs : f32\n"
                 "          %%rb = arith.addf %%bc, %%as : f32\n"
                 "          memref.store %%ra, %%y[%%c0, %%t, %%first] : %s\n"
                 "          memref.store %%rb, %%y[%%c0, %%t, %%second] : %s\n"
                 "        }\n      }\n    }\n    return\n  }\n",
                 row_type, row_type, row_type, row_type);
}

void iq_kernel_attention(iq_text_t *text, iq_kernel_set_t *set, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, double scale, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_attention_%lld_%lld_%lld", (long long)heads,
           (long long)kv_heads, (long long)head_dim);
  if (!iq_kernel_claim(set, name, text))
    return;
  char q_type[64], kv_type[64], cache_type[64];
  snprintf(q_type, sizeof q_type, "memref<1x?x%lldxf32>", (long long)(heads * head_dim));
  snprintf(kv_type, sizeof kv_type, "memref<1x?x%lldxf32>", (long long)(kv_heads * head_dim));
  snprintf(cache_type, sizeof cache_type, "memref<1x%lldx?x%lldxf32>", (long long)kv_heads,
           (long long)head_dim);
  iq_text_printf(
      text,
      "  func.func private @%s(%%q: %s, %%k: %s, %%v: %s, %%k_cache: %s, %%v_cache: %s, "
      "%%positions: memref<1x?xi64>, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
      "    %%c2 = arith.constant 2 : index\n"
      "    %%heads = arith.constant %lld : index\n"
      "    %%kv_heads = arith.constant %lld : index\n"
      "    %%head_dim = arith.constant %lld : index\n"
      "    %%group = arith.constant %lld : index\n"
      "    %%scale = arith.constant %.9e : f32\n"
      "    %%lowest = arith.constant 0xFF800000 : f32\n"
      "    %%one = arith.constant 1.0 : f32\n"
      "    %%tokens = memref.dim %%q, %%c1 : %s\n"
      "    %%capacity = memref.dim %%k_cache, %%c2 : %s\n",
      name, q_type, kv_type, kv_type, cache_type, cache_type, q_type, prologue, (long long)heads,
      (long long)kv_heads, (long long)head_dim, (long long)(heads / kv_heads), scale, q_type,
      cache_type);
  /* Store this call's keys and values at their positions first, so each
   * query reads every entry up to its own position. */
  iq_text_printf(
      text,
      "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "      %%p64 = memref.load %%positions[%%c0, %%t] : memref<1x?xi64>\n"
      "      %%p = arith.index_cast %%p64 : i64 to index\n"
      "      scf.for %%kh = %%c0 to %%kv_heads step %%c1 {\n"
      "        %%base = arith.muli %%kh, %%head_dim : index\n"
      "        scf.for %%d = %%c0 to %%head_dim step %%c1 {\n"
      "          %%column = arith.addi %%base, %%d : index\n"
      "          %%kv = memref.load %%k[%%c0, %%t, %%column] : %s\n"
      "          %%vv = memref.load %%v[%%c0, %%t, %%column] : %s\n"
      "          memref.store %%kv, %%k_cache[%%c0, %%kh, %%p, %%d] : %s\n"
      "          memref.store %%vv, %%v_cache[%%c0, %%kh, %%p, %%d] : %s\n"
      "        }\n      }\n    }\n",
      kv_type, kv_type, cache_type, cache_type);
  /* exp as in the int4 attention, so both paths round it alike. */
  char exp_text[4096];
  iq_exp_f32_text(exp_text, sizeof exp_text, "          ", "weight", "shifted");
  iq_text_printf(
      text,
      "    %%scores = memref.alloc(%%capacity) : memref<?xf32>\n"
      "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "      %%p64 = memref.load %%positions[%%c0, %%t] : memref<1x?xi64>\n"
      "      %%p = arith.index_cast %%p64 : i64 to index\n"
      "      %%length = arith.addi %%p, %%c1 : index\n"
      "      scf.for %%h = %%c0 to %%heads step %%c1 {\n"
      "        %%kh = arith.divui %%h, %%group : index\n"
      "        %%q_base = arith.muli %%h, %%head_dim : index\n"
      "        %%max = scf.for %%j = %%c0 to %%length step %%c1 iter_args(%%m = %%lowest) -> (f32) {\n"
      "          %%dot = scf.for %%d = %%c0 to %%head_dim step %%c1 iter_args(%%sum = %%zero) -> (f32) {\n"
      "            %%column = arith.addi %%q_base, %%d : index\n"
      "            %%qv = memref.load %%q[%%c0, %%t, %%column] : %s\n"
      "            %%kv = memref.load %%k_cache[%%c0, %%kh, %%j, %%d] : %s\n"
      "            %%product = arith.mulf %%qv, %%kv fastmath<fast> : f32\n"
      "            %%next = arith.addf %%sum, %%product fastmath<fast> : f32\n"
      "            scf.yield %%next : f32\n"
      "          }\n"
      "          %%score = arith.mulf %%dot, %%scale : f32\n"
      "          memref.store %%score, %%scores[%%j] : memref<?xf32>\n"
      "          %%larger = arith.maximumf %%m, %%score : f32\n"
      "          scf.yield %%larger : f32\n"
      "        }\n"
      "        %%total = scf.for %%j = %%c0 to %%length step %%c1 iter_args(%%sum = %%zero) -> (f32) {\n"
      "          %%score = memref.load %%scores[%%j] : memref<?xf32>\n"
      "          %%shifted = arith.subf %%score, %%max : f32\n"
      "%s"
      "          memref.store %%weight, %%scores[%%j] : memref<?xf32>\n"
      "          %%next = arith.addf %%sum, %%weight : f32\n"
      "          scf.yield %%next : f32\n"
      "        }\n"
      "        %%inverse = arith.divf %%one, %%total : f32\n"
      "        scf.for %%d = %%c0 to %%head_dim step %%c1 {\n"
      "          %%mixed = scf.for %%j = %%c0 to %%length step %%c1 iter_args(%%sum = %%zero) -> (f32) {\n"
      "            %%weight = memref.load %%scores[%%j] : memref<?xf32>\n"
      "            %%vv = memref.load %%v_cache[%%c0, %%kh, %%j, %%d] : %s\n"
      "            %%product = arith.mulf %%weight, %%vv fastmath<fast> : f32\n"
      "            %%next = arith.addf %%sum, %%product fastmath<fast> : f32\n"
      "            scf.yield %%next : f32\n"
      "          }\n"
      "          %%normalized = arith.mulf %%mixed, %%inverse : f32\n"
      "          %%column = arith.addi %%q_base, %%d : index\n"
      "          memref.store %%normalized, %%y[%%c0, %%t, %%column] : %s\n"
      "        }\n      }\n    }\n"
      "    memref.dealloc %%scores : memref<?xf32>\n"
      "    return\n  }\n",
      q_type, cache_type, exp_text, cache_type, q_type);
}

static void elementwise(iq_text_t *text, const char *name, int64_t width, const char *body) {
  char row_type[64];
  snprintf(row_type, sizeof row_type, "memref<1x?x%lldxf32>", (long long)width);
  iq_text_printf(text,
                 "  func.func private @%s(%%a: %s, %%b: %s, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
                 "    %%one = arith.constant 1.0 : f32\n"
                 "    %%width = arith.constant %lld : index\n"
                 "    %%tokens = memref.dim %%a, %%c1 : %s\n"
                 "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
                 "      scf.for %%h = %%c0 to %%width step %%c1 {\n"
                 "        %%x = memref.load %%a[%%c0, %%t, %%h] : %s\n"
                 "        %%z = memref.load %%b[%%c0, %%t, %%h] : %s\n"
                 "%s"
                 "        memref.store %%r, %%y[%%c0, %%t, %%h] : %s\n"
                 "      }\n    }\n    return\n  }\n",
                 name, row_type, row_type, row_type, prologue, (long long)width, row_type, row_type,
                 row_type, body, row_type);
}

void iq_exp_f32_text(char *out, size_t size, const char *indent, const char *prefix,
                     const char *x) {
  const char *p = prefix, *in = indent;
  snprintf(out, size,
           "%s%%%s_hi = arith.constant 88.0 : f32\n"
           "%s%%%s_lo = arith.constant -87.0 : f32\n"
           "%s%%%s_x1 = arith.minnumf %%%s, %%%s_hi : f32\n"
           "%s%%%s_x = arith.maxnumf %%%s_x1, %%%s_lo : f32\n"
           "%s%%%s_log2e = arith.constant 1.44269504088896341 : f32\n"
           "%s%%%s_half = arith.constant 0.5 : f32\n"
           "%s%%%s_t = arith.mulf %%%s_x, %%%s_log2e : f32\n"
           "%s%%%s_t1 = arith.addf %%%s_t, %%%s_half : f32\n"
           "%s%%%s_n = math.floor %%%s_t1 : f32\n"
           "%s%%%s_c1 = arith.constant -0.693359375 : f32\n"
           "%s%%%s_c2 = arith.constant 2.12194440e-4 : f32\n"
           "%s%%%s_r1 = math.fma %%%s_n, %%%s_c1, %%%s_x : f32\n"
           "%s%%%s_r = math.fma %%%s_n, %%%s_c2, %%%s_r1 : f32\n"
           "%s%%%s_z = arith.mulf %%%s_r, %%%s_r : f32\n"
           "%s%%%s_k0 = arith.constant 1.9875691500e-4 : f32\n"
           "%s%%%s_k1 = arith.constant 1.3981999507e-3 : f32\n"
           "%s%%%s_k2 = arith.constant 8.3334519073e-3 : f32\n"
           "%s%%%s_k3 = arith.constant 4.1665795894e-2 : f32\n"
           "%s%%%s_k4 = arith.constant 1.6666665459e-1 : f32\n"
           "%s%%%s_k5 = arith.constant 5.0000001201e-1 : f32\n"
           "%s%%%s_p1 = math.fma %%%s_k0, %%%s_r, %%%s_k1 : f32\n"
           "%s%%%s_p2 = math.fma %%%s_p1, %%%s_r, %%%s_k2 : f32\n"
           "%s%%%s_p3 = math.fma %%%s_p2, %%%s_r, %%%s_k3 : f32\n"
           "%s%%%s_p4 = math.fma %%%s_p3, %%%s_r, %%%s_k4 : f32\n"
           "%s%%%s_p5 = math.fma %%%s_p4, %%%s_r, %%%s_k5 : f32\n"
           "%s%%%s_y1 = math.fma %%%s_p5, %%%s_z, %%%s_r : f32\n"
           "%s%%%s_one = arith.constant 1.0 : f32\n"
           "%s%%%s_y = arith.addf %%%s_y1, %%%s_one : f32\n"
           "%s%%%s_ni = arith.fptosi %%%s_n : f32 to i32\n"
           "%s%%%s_bias = arith.constant 127 : i32\n"
           "%s%%%s_e = arith.addi %%%s_ni, %%%s_bias : i32\n"
           "%s%%%s_shift = arith.constant 23 : i32\n"
           "%s%%%s_bits = arith.shli %%%s_e, %%%s_shift : i32\n"
           "%s%%%s_scale = arith.bitcast %%%s_bits : i32 to f32\n"
           "%s%%%s = arith.mulf %%%s_y, %%%s_scale : f32\n",
           in, p, in, p, in, p, x, p, in, p, p, p, in, p, in, p, in, p, p, p, in, p, p, p, in, p,
           p, in, p, in, p, in, p, p, p, p, in, p, p, p, p, in, p, p, p, in, p, in, p, in, p, in,
           p, in, p, in, p, in, p, p, p, p, in, p, p, p, p, in, p, p, p, p, in, p, p, p, p, in, p,
           p, p, p, in, p, p, p, p, in, p, in, p, p, p, in, p, p, in, p, in, p, p, p, in, p, in, p,
           p, p, in, p, p, in, p, p, p);
}

void iq_kernel_silu_mul(iq_text_t *text, iq_kernel_set_t *set, int64_t width, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_silu_mul_%lld", (long long)width);
  if (!iq_kernel_claim(set, name, text))
    return;
  /* exp through iq_exp_f32_text, which LLVM vectorizes (math.exp becomes
   * a call of libm's expf per value). */
  char exp_text[4096], body[4600];
  iq_exp_f32_text(exp_text, sizeof exp_text, "        ", "e", "neg");
  snprintf(body, sizeof body,
           "        %%neg = arith.negf %%x : f32\n"
           "%s"
           "        %%d = arith.addf %%one, %%e : f32\n"
           "        %%s = arith.divf %%x, %%d : f32\n"
           "        %%r = arith.mulf %%s, %%z : f32\n",
           exp_text);
  elementwise(text, name, width, body);
}

void iq_kernel_add(iq_text_t *text, iq_kernel_set_t *set, int64_t width, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_add_%lld", (long long)width);
  if (!iq_kernel_claim(set, name, text))
    return;
  elementwise(text, name, width, "        %r = arith.addf %x, %z : f32\n");
}
