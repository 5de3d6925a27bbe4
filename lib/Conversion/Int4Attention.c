/* Attention over an int4 KV cache as MLIR source: the cache append
 * (Hadamard transform of K along head_dim, then per-(token, KV head)
 * 4-bit quantization of K and V) and causal attention for M query tokens
 * that reads the codes directly, with no float copy of the cache.
 *
 * Cache layout, per KV head h and token j (capacity tokens per head):
 * codes[(h * capacity + j) * head_dim / 2 + i] holds dimension 2i in the
 * low nibble and 2i + 1 in the high nibble; scale and zero (float) are at
 * [h * capacity + j]. A value is scale * (code - zero).
 *
 * Scores use the codes through dot(q, k^) = s * (dot(q, code) - z * sum(q)).
 * All float loops run in index order without fast-math flags, so a scalar
 * C loop nest in the same order gives the same bits (the tests have one). */
#include "Int4KernelsInternal.h"
#include "Kernels.h"

#include <stdio.h>
#include <string.h>

/* Appends `template` with every "@P" replaced by `prefix` and every "@C"
 * by `clip`. */
static void emit_template(iq_text_t *t, const char *template, const char *prefix,
                          const char *clip) {
  for (const char *c = template; *c; ++c) {
    if (c[0] == '@' && c[1] == 'P') {
      iq_text_append(t, prefix, strlen(prefix));
      ++c;
    } else if (c[0] == '@' && c[1] == 'C') {
      iq_text_append(t, clip, strlen(clip));
      ++c;
    } else {
      iq_text_append(t, c, 1);
    }
  }
}

/* Quantizes %work[0 .. %hd) into cache slot %slot of @P_codes, @P_scale
 * and @P_zero_points with clip factor %@C. With %@P_contains_zero (i1)
 * true this is iq_quantize_per_token's rule with the clip applied to the
 * range. Otherwise it is iq_quantize_groupwise's rule: the range is the
 * row's own min and max and the smallest scale is 1e-6. */
static const char cache_quantize_template[] =
    "        %@P_first = memref.load %work[%c0] : memref<?xf32>\n"
    "        %@P_range:2 = scf.for %d = %c1 to %hd step %c1 "
    "iter_args(%high = %@P_first, %low = %@P_first) -> (f32, f32) {\n"
    "          %v = memref.load %work[%d] : memref<?xf32>\n"
    "          %high_next = arith.maxnumf %high, %v : f32\n"
    "          %low_next = arith.minnumf %low, %v : f32\n"
    "          scf.yield %high_next, %low_next : f32, f32\n"
    "        }\n"
    "        %@P_high_zero = arith.maxnumf %@P_range#0, %f0 : f32\n"
    "        %@P_low_zero = arith.minnumf %@P_range#1, %f0 : f32\n"
    "        %@P_high0 = arith.select %@P_contains_zero, %@P_high_zero, %@P_range#0 : f32\n"
    "        %@P_low0 = arith.select %@P_contains_zero, %@P_low_zero, %@P_range#1 : f32\n"
    "        %@P_eps = arith.select %@P_contains_zero, %eps, %eps_group : f32\n"
    "        %@P_high1 = arith.mulf %@P_high0, %@C : f32\n"
    "        %@P_low1 = arith.mulf %@P_low0, %@C : f32\n"
    "        %@P_hz = arith.cmpf oeq, %@P_high1, %f0 : f32\n"
    "        %@P_lz = arith.cmpf oeq, %@P_low1, %f0 : f32\n"
    "        %@P_both = arith.andi %@P_hz, %@P_lz : i1\n"
    "        %@P_high = arith.select %@P_both, %f1, %@P_high1 : f32\n"
    "        %@P_low = arith.select %@P_both, %f_minus1, %@P_low1 : f32\n"
    "        %@P_span = arith.subf %@P_high, %@P_low : f32\n"
    "        %@P_step0 = arith.divf %@P_span, %f15 : f32\n"
    "        %@P_step = arith.maxnumf %@P_step0, %@P_eps : f32\n"
    "        %@P_neg = arith.negf %@P_low : f32\n"
    "        %@P_zr = arith.divf %@P_neg, %@P_step : f32\n"
    "        %@P_zero = math.roundeven %@P_zr : f32\n"
    "        %@P_row = arith.muli %slot, %half : index\n"
    "        scf.for %i = %c0 to %half step %c1 {\n"
    "          %d0 = arith.muli %i, %c2 : index\n"
    "          %d1 = arith.addi %d0, %c1 : index\n"
    "          %v0 = memref.load %work[%d0] : memref<?xf32>\n"
    "          %v1 = memref.load %work[%d1] : memref<?xf32>\n"
    "          %q0 = arith.divf %v0, %@P_step : f32\n"
    "          %q1 = arith.divf %v1, %@P_step : f32\n"
    "          %r0 = math.roundeven %q0 : f32\n"
    "          %r1 = math.roundeven %q1 : f32\n"
    "          %s0 = arith.addf %r0, %@P_zero : f32\n"
    "          %s1 = arith.addf %r1, %@P_zero : f32\n"
    "          %m0 = arith.maxnumf %s0, %f0 : f32\n"
    "          %m1 = arith.maxnumf %s1, %f0 : f32\n"
    "          %n0 = arith.minnumf %m0, %f15 : f32\n"
    "          %n1 = arith.minnumf %m1, %f15 : f32\n"
    "          %c_lo = arith.fptoui %n0 : f32 to i8\n"
    "          %c_hi = arith.fptoui %n1 : f32 to i8\n"
    "          %c_hi4 = arith.shli %c_hi, %i8_4 : i8\n"
    "          %byte = arith.ori %c_lo, %c_hi4 : i8\n"
    "          %bi = arith.addi %@P_row, %i : index\n"
    "          memref.store %byte, %@P_codes[%bi] : memref<?xi8>\n"
    "        }\n"
    "        memref.store %@P_step, %@P_scale[%slot] : memref<?xf32>\n"
    "        memref.store %@P_zero, %@P_zero_points[%slot] : memref<?xf32>\n";

static void emit_cache_quantize(iq_text_t *t, const char *prefix, const char *clip) {
  emit_template(t, cache_quantize_template, prefix, clip);
}

/* Emits the butterflies along %work[0 .. %hd) and the multiply by
 * %hscale. */
static void emit_head_fwht(iq_text_t *t, const char *indent) {
  iq_text_printf(t,
                 "%sscf.for %%stage = %%c0 to %%log2hd step %%c1 {\n"
                 "%s  %%h1 = arith.shli %%c1, %%stage : index\n"
                 "%s  %%h2 = arith.shli %%h1, %%c1 : index\n"
                 "%s  scf.for %%i = %%c0 to %%hd step %%h2 {\n"
                 "%s    %%j_end = arith.addi %%i, %%h1 : index\n"
                 "%s    scf.for %%j = %%i to %%j_end step %%c1 {\n"
                 "%s      %%jh = arith.addi %%j, %%h1 : index\n"
                 "%s      %%fa = memref.load %%work[%%j] : memref<?xf32>\n"
                 "%s      %%fb = memref.load %%work[%%jh] : memref<?xf32>\n"
                 "%s      %%fs = arith.addf %%fa, %%fb : f32\n"
                 "%s      %%fd = arith.subf %%fa, %%fb : f32\n"
                 "%s      memref.store %%fs, %%work[%%j] : memref<?xf32>\n"
                 "%s      memref.store %%fd, %%work[%%jh] : memref<?xf32>\n"
                 "%s    }\n"
                 "%s  }\n"
                 "%s}\n"
                 "%sscf.for %%d = %%c0 to %%hd step %%c1 {\n"
                 "%s  %%fv = memref.load %%work[%%d] : memref<?xf32>\n"
                 "%s  %%fw = arith.mulf %%fv, %%hscale : f32\n"
                 "%s  memref.store %%fw, %%work[%%d] : memref<?xf32>\n"
                 "%s}\n",
                 indent, indent, indent, indent, indent, indent, indent, indent, indent, indent,
                 indent, indent, indent, indent, indent, indent, indent, indent, indent, indent,
                 indent);
}

static const char *attention_constants =
    "    %c0 = arith.constant 0 : index\n"
    "    %c1 = arith.constant 1 : index\n"
    "    %c2 = arith.constant 2 : index\n"
    "    %i8_4 = arith.constant 4 : i8\n"
    "    %i8_15 = arith.constant 15 : i8\n"
    "    %f0 = arith.constant 0.0 : f32\n"
    "    %f1 = arith.constant 1.0 : f32\n"
    "    %f_minus1 = arith.constant -1.0 : f32\n"
    "    %f15 = arith.constant 15.0 : f32\n"
    "    %eps = arith.constant 1.0e-08 : f32\n"
    "    %c8 = arith.constant 8 : index\n"
    "    %c16 = arith.constant 16 : index\n"
    "    %v15 = arith.constant dense<15> : vector<16xi8>\n"
    "    %v4 = arith.constant dense<4> : vector<16xi8>\n"
    "    %zero16 = arith.constant dense<0.0> : vector<16xf32>\n"
    "    %half = arith.divui %hd, %c2 : index\n";

void iq_int4_emit_kv_append(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_text_printf(t,
                 "  func.func @iqk_%s_kv_append(%%k_rows: memref<?xf32>, %%v_rows: memref<?xf32>, "
                 "%%k_codes: memref<?xi8>, %%k_scale: memref<?xf32>, %%k_zero_points: "
                 "memref<?xf32>, %%v_codes: memref<?xi8>, %%v_scale: memref<?xf32>, "
                 "%%v_zero_points: memref<?xf32>, %%work: memref<?xf32>, %%tokens: index, "
                 "%%kv_heads: index, %%hd: index, %%capacity: index, %%start: index, "
                 "%%log2hd: index, %%hscale: f32, %%k_clip: f32, %%v_clip: f32, "
                 "%%head_begin: index, %%head_end: index, %%v_group_range: i64) {\n%s",
                 isa->name, attention_constants);
  iq_text_printf(t,
                 "    %%eps_group = arith.constant 1.0e-06 : f32\n"
                 "    %%k_contains_zero = arith.constant true\n"
                 "    %%i64_zero = arith.constant 0 : i64\n"
                 "    %%v_contains_zero = arith.cmpi eq, %%v_group_range, %%i64_zero : i64\n");
  iq_text_printf(t,
                 "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
                 "      scf.for %%g = %%head_begin to %%head_end step %%c1 {\n"
                 "        %%tk = arith.muli %%t, %%kv_heads : index\n"
                 "        %%tkg = arith.addi %%tk, %%g : index\n"
                 "        %%src = arith.muli %%tkg, %%hd : index\n"
                 "        %%g_slots = arith.muli %%g, %%capacity : index\n"
                 "        %%pos = arith.addi %%start, %%t : index\n"
                 "        %%slot = arith.addi %%g_slots, %%pos : index\n"
                 "        scf.for %%d = %%c0 to %%hd step %%c1 {\n"
                 "          %%si = arith.addi %%src, %%d : index\n"
                 "          %%x = memref.load %%k_rows[%%si] : memref<?xf32>\n"
                 "          memref.store %%x, %%work[%%d] : memref<?xf32>\n"
                 "        }\n");
  emit_head_fwht(t, "        ");
  emit_cache_quantize(t, "k", "k_clip");
  iq_text_printf(t,
                 "        scf.for %%d = %%c0 to %%hd step %%c1 {\n"
                 "          %%si = arith.addi %%src, %%d : index\n"
                 "          %%x = memref.load %%v_rows[%%si] : memref<?xf32>\n"
                 "          memref.store %%x, %%work[%%d] : memref<?xf32>\n"
                 "        }\n");
  emit_cache_quantize(t, "v", "v_clip");
  iq_text_printf(t, "      }\n    }\n    return\n  }\n");
}

/* Emits %dot, the dot product of the transformed query in work[0, hd)
 * with the K codes of %slot (bytes from %kbase). Independent partial sums
 * keep the adds from waiting on each other: 16 vector lanes over 16-byte
 * chunks from hd = 32 on, added in lane order; 8 partial sums over bytes
 * i = l mod 8 from hd = 16 on, added pairwise; one sum below. Each adds
 * q[2i] * low nibble, then q[2i + 1] * high nibble, in byte order, as the
 * scalar reference does. */
static void emit_score_dot(iq_text_t *t) {
  iq_text_printf(t,
                 "          %%sixteen_lanes = arith.cmpi uge, %%half, %%c16 : index\n"
                 "          %%dot = scf.if %%sixteen_lanes -> (f32) {\n"
                 "            %%lanes = scf.for %%cb = %%c0 to %%half step %%c16 iter_args(%%acc = %%zero16) -> (vector<16xf32>) {\n"
                 "              %%bi = arith.addi %%kbase, %%cb : index\n"
                 "              %%bytes = vector.load %%k_codes[%%bi] : memref<?xi8>, vector<16xi8>\n"
                 "              %%lo = arith.andi %%bytes, %%v15 : vector<16xi8>\n"
                 "              %%hi = arith.shrui %%bytes, %%v4 : vector<16xi8>\n"
                 "              %%flo = arith.uitofp %%lo : vector<16xi8> to vector<16xf32>\n"
                 "              %%fhi = arith.uitofp %%hi : vector<16xi8> to vector<16xf32>\n"
                 "              %%qi = arith.muli %%cb, %%c2 : index\n"
                 "              %%q32 = vector.load %%work[%%qi] : memref<?xf32>, vector<32xf32>\n"
                 "              %%qe = vector.shuffle %%q32, %%q32 [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30] : vector<32xf32>, vector<32xf32>\n"
                 "              %%qo = vector.shuffle %%q32, %%q32 [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31] : vector<32xf32>, vector<32xf32>\n"
                 "              %%pe = arith.mulf %%qe, %%flo : vector<16xf32>\n"
                 "              %%ae = arith.addf %%acc, %%pe : vector<16xf32>\n"
                 "              %%po = arith.mulf %%qo, %%fhi : vector<16xf32>\n"
                 "              %%ao = arith.addf %%ae, %%po : vector<16xf32>\n"
                 "              scf.yield %%ao : vector<16xf32>\n"
                 "            }\n");
  for (int l = 0; l < 16; ++l) {
    char previous[16];
    snprintf(previous, sizeof previous, l == 0 ? "f0" : "total%d", l - 1);
    iq_text_printf(t,
                   "            %%lane%d = vector.extract %%lanes[%d] : f32 from vector<16xf32>\n"
                   "            %%total%d = arith.addf %%%s, %%lane%d : f32\n",
                   l, l, l, previous, l);
  }
  iq_text_printf(t,
                 "            scf.yield %%total15 : f32\n"
                 "          } else {\n");
  iq_text_printf(t,
                 "          %%eight_lanes = arith.cmpi uge, %%half, %%c8 : index\n"
                 "          %%dot8 = scf.if %%eight_lanes -> (f32) {\n"
                 "            %%parts:8 = scf.for %%i = %%c0 to %%half step %%c8 iter_args(");
  for (int l = 0; l < 8; ++l)
    iq_text_printf(t, "%s%%s%d = %%f0", l ? ", " : "", l);
  iq_text_printf(t, ") -> (f32, f32, f32, f32, f32, f32, f32, f32) {\n");
  for (int l = 0; l < 8; ++l)
    iq_text_printf(t,
                   "              %%l%d = arith.constant %d : index\n"
                   "              %%i%d = arith.addi %%i, %%l%d : index\n"
                   "              %%b%d = arith.addi %%kbase, %%i%d : index\n"
                   "              %%byte%d = memref.load %%k_codes[%%b%d] : memref<?xi8>\n"
                   "              %%lo%d = arith.andi %%byte%d, %%i8_15 : i8\n"
                   "              %%hi%d = arith.shrui %%byte%d, %%i8_4 : i8\n"
                   "              %%flo%d = arith.uitofp %%lo%d : i8 to f32\n"
                   "              %%fhi%d = arith.uitofp %%hi%d : i8 to f32\n"
                   "              %%e%d = arith.muli %%i%d, %%c2 : index\n"
                   "              %%o%d = arith.addi %%e%d, %%c1 : index\n"
                   "              %%qe%d = memref.load %%work[%%e%d] : memref<?xf32>\n"
                   "              %%qo%d = memref.load %%work[%%o%d] : memref<?xf32>\n"
                   "              %%pe%d = arith.mulf %%qe%d, %%flo%d : f32\n"
                   "              %%ae%d = arith.addf %%s%d, %%pe%d : f32\n"
                   "              %%po%d = arith.mulf %%qo%d, %%fhi%d : f32\n"
                   "              %%ao%d = arith.addf %%ae%d, %%po%d : f32\n",
                   l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l, l,
                   l, l, l, l, l, l, l, l, l, l);
  iq_text_printf(t, "              scf.yield ");
  for (int l = 0; l < 8; ++l)
    iq_text_printf(t, "%s%%ao%d", l ? ", " : "", l);
  iq_text_printf(t,
                 " : f32, f32, f32, f32, f32, f32, f32, f32\n"
                 "            }\n"
                 "            %%p01 = arith.addf %%parts#0, %%parts#1 : f32\n"
                 "            %%p23 = arith.addf %%parts#2, %%parts#3 : f32\n"
                 "            %%p45 = arith.addf %%parts#4, %%parts#5 : f32\n"
                 "            %%p67 = arith.addf %%parts#6, %%parts#7 : f32\n"
                 "            %%p0123 = arith.addf %%p01, %%p23 : f32\n"
                 "            %%p4567 = arith.addf %%p45, %%p67 : f32\n"
                 "            %%sum8 = arith.addf %%p0123, %%p4567 : f32\n"
                 "            scf.yield %%sum8 : f32\n"
                 "          } else {\n"
                 "            %%sum1 = scf.for %%i = %%c0 to %%half step %%c1 iter_args(%%acc = %%f0) -> (f32) {\n"
                 "              %%bi = arith.addi %%kbase, %%i : index\n"
                 "              %%byte = memref.load %%k_codes[%%bi] : memref<?xi8>\n"
                 "              %%lo = arith.andi %%byte, %%i8_15 : i8\n"
                 "              %%hi = arith.shrui %%byte, %%i8_4 : i8\n"
                 "              %%flo = arith.uitofp %%lo : i8 to f32\n"
                 "              %%fhi = arith.uitofp %%hi : i8 to f32\n"
                 "              %%d0 = arith.muli %%i, %%c2 : index\n"
                 "              %%d1 = arith.addi %%d0, %%c1 : index\n"
                 "              %%q0 = memref.load %%work[%%d0] : memref<?xf32>\n"
                 "              %%q1 = memref.load %%work[%%d1] : memref<?xf32>\n"
                 "              %%p0 = arith.mulf %%q0, %%flo : f32\n"
                 "              %%a0 = arith.addf %%acc, %%p0 : f32\n"
                 "              %%p1 = arith.mulf %%q1, %%fhi : f32\n"
                 "              %%a1 = arith.addf %%a0, %%p1 : f32\n"
                 "              scf.yield %%a1 : f32\n"
                 "            }\n"
                 "            scf.yield %%sum1 : f32\n"
                 "          }\n"
                 "          scf.yield %%dot8 : f32\n"
                 "          }\n");
}

void iq_int4_emit_attention(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_text_printf(t,
                 "  func.func @iqk_%s_attention(%%q: memref<?xf32>, %%out: memref<?xf32>, "
                 "%%k_codes: memref<?xi8>, %%k_scale: memref<?xf32>, %%k_zero_points: "
                 "memref<?xf32>, %%v_codes: memref<?xi8>, %%v_scale: memref<?xf32>, "
                 "%%v_zero_points: memref<?xf32>, %%work: memref<?xf32>, %%tokens: index, "
                 "%%heads: index, %%kv_heads: index, %%hd: index, %%capacity: index, "
                 "%%position: index, %%log2hd: index, %%hscale: f32, %%softmax_scale: f32, "
                 "%%head_begin: index, %%head_end: index) {\n%s",
                 isa->name, attention_constants);
  iq_text_printf(
      t,
      "    %%f_minus_inf = arith.constant 0xFF800000 : f32\n"
      "    %%group = arith.divui %%heads, %%kv_heads : index\n"
      "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "      %%keys0 = arith.addi %%position, %%t : index\n"
      "      %%keys = arith.addi %%keys0, %%c1 : index\n"
      "      scf.for %%h = %%head_begin to %%head_end step %%c1 {\n"
      "        %%g = arith.divui %%h, %%group : index\n"
      "        %%th = arith.muli %%t, %%heads : index\n"
      "        %%thh = arith.addi %%th, %%h : index\n"
      "        %%row = arith.muli %%thh, %%hd : index\n"
      "        %%g_slots = arith.muli %%g, %%capacity : index\n"
      "        scf.for %%d = %%c0 to %%hd step %%c1 {\n"
      "          %%qi = arith.addi %%row, %%d : index\n"
      "          %%x = memref.load %%q[%%qi] : memref<?xf32>\n"
      "          memref.store %%x, %%work[%%d] : memref<?xf32>\n"
      "        }\n");
  emit_head_fwht(t, "        ");
  iq_text_printf(
      t,
      "        %%qsum = scf.for %%d = %%c0 to %%hd step %%c1 iter_args(%%acc = %%f0) -> (f32) {\n"
      "          %%x = memref.load %%work[%%d] : memref<?xf32>\n"
      "          %%next = arith.addf %%acc, %%x : f32\n"
      "          scf.yield %%next : f32\n"
      "        }\n"
      /* Scores into work[hd + j], with their maximum. */
      "        %%max = scf.for %%j = %%c0 to %%keys step %%c1 iter_args(%%best = %%f_minus_inf) "
      "-> (f32) {\n"
      "          %%slot = arith.addi %%g_slots, %%j : index\n"
      "          %%kbase = arith.muli %%slot, %%half : index\n");
  emit_score_dot(t);
  char exp_text[4096];
  iq_exp_f32_text(exp_text, sizeof exp_text, "          ", "e", "shifted");
  iq_text_printf(
      t,
      "          %%ks = memref.load %%k_scale[%%slot] : memref<?xf32>\n"
      "          %%kz = memref.load %%k_zero_points[%%slot] : memref<?xf32>\n"
      "          %%zq = arith.mulf %%kz, %%qsum : f32\n"
      "          %%centered = arith.subf %%dot, %%zq : f32\n"
      "          %%raw = arith.mulf %%ks, %%centered : f32\n"
      "          %%score = arith.mulf %%raw, %%softmax_scale : f32\n"
      "          %%wi = arith.addi %%hd, %%j : index\n"
      "          memref.store %%score, %%work[%%wi] : memref<?xf32>\n"
      "          %%better = arith.maxnumf %%best, %%score : f32\n"
      "          scf.yield %%better : f32\n"
      "        }\n"
      "        %%denominator = scf.for %%j = %%c0 to %%keys step %%c1 iter_args(%%acc = %%f0) "
      "-> (f32) {\n"
      "          %%wi = arith.addi %%hd, %%j : index\n"
      "          %%score = memref.load %%work[%%wi] : memref<?xf32>\n"
      "          %%shifted = arith.subf %%score, %%max : f32\n"
      "%s"
      "          memref.store %%e, %%work[%%wi] : memref<?xf32>\n"
      "          %%next = arith.addf %%acc, %%e : f32\n"
      "          scf.yield %%next : f32\n"
      "        }\n"
      /* weight_j = e_j / denominator * v_scale_j replaces e_j in work, and
       * out[d] = sum over keys j, in order, of weight_j * (code_jd - v_zero_j). */
      "        scf.for %%j = %%c0 to %%keys step %%c1 {\n"
      "          %%slot = arith.addi %%g_slots, %%j : index\n"
      "          %%wi = arith.addi %%hd, %%j : index\n"
      "          %%e = memref.load %%work[%%wi] : memref<?xf32>\n"
      "          %%p = arith.divf %%e, %%denominator : f32\n"
      "          %%vs = memref.load %%v_scale[%%slot] : memref<?xf32>\n"
      "          %%weight = arith.mulf %%p, %%vs : f32\n"
      "          memref.store %%weight, %%work[%%wi] : memref<?xf32>\n"
      "        }\n"
      /* From head_dim 32 on: 16 bytes (32 dimensions) at a time, the even
       * and odd dimensions in two vectors, summed over the keys. */
      "        %%v_wide = arith.cmpi uge, %%half, %%c16 : index\n"
      "        scf.if %%v_wide {\n"
      "          scf.for %%cb = %%c0 to %%half step %%c16 {\n"
      "            %%sums:2 = scf.for %%j = %%c0 to %%keys step %%c1 iter_args(%%ae = %%zero16, %%ao = %%zero16) -> (vector<16xf32>, vector<16xf32>) {\n"
      "              %%slot = arith.addi %%g_slots, %%j : index\n"
      "              %%vbase = arith.muli %%slot, %%half : index\n"
      "              %%bi = arith.addi %%vbase, %%cb : index\n"
      "              %%bytes = vector.load %%v_codes[%%bi] : memref<?xi8>, vector<16xi8>\n"
      "              %%lo = arith.andi %%bytes, %%v15 : vector<16xi8>\n"
      "              %%hi = arith.shrui %%bytes, %%v4 : vector<16xi8>\n"
      "              %%flo = arith.uitofp %%lo : vector<16xi8> to vector<16xf32>\n"
      "              %%fhi = arith.uitofp %%hi : vector<16xi8> to vector<16xf32>\n"
      "              %%wi = arith.addi %%hd, %%j : index\n"
      "              %%w = memref.load %%work[%%wi] : memref<?xf32>\n"
      "              %%wv = vector.broadcast %%w : f32 to vector<16xf32>\n"
      "              %%vz = memref.load %%v_zero_points[%%slot] : memref<?xf32>\n"
      "              %%vzv = vector.broadcast %%vz : f32 to vector<16xf32>\n"
      "              %%ce = arith.subf %%flo, %%vzv : vector<16xf32>\n"
      "              %%co = arith.subf %%fhi, %%vzv : vector<16xf32>\n"
      "              %%pe = arith.mulf %%wv, %%ce : vector<16xf32>\n"
      "              %%po = arith.mulf %%wv, %%co : vector<16xf32>\n"
      "              %%ae2 = arith.addf %%ae, %%pe : vector<16xf32>\n"
      "              %%ao2 = arith.addf %%ao, %%po : vector<16xf32>\n"
      "              scf.yield %%ae2, %%ao2 : vector<16xf32>, vector<16xf32>\n"
      "            }\n"
      "            %%il = vector.shuffle %%sums#0, %%sums#1 [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31] : vector<16xf32>, vector<16xf32>\n"
      "            %%cb2 = arith.muli %%cb, %%c2 : index\n"
      "            %%oi = arith.addi %%row, %%cb2 : index\n"
      "            vector.store %%il, %%out[%%oi] : memref<?xf32>, vector<32xf32>\n"
      "          }\n"
      "        } else {\n"
      "          scf.for %%d = %%c0 to %%hd step %%c1 {\n"
      "            %%bd = arith.divui %%d, %%c2 : index\n"
      "            %%odd_d = arith.remui %%d, %%c2 : index\n"
      "            %%is_odd = arith.cmpi ne, %%odd_d, %%c0 : index\n"
      "            %%sum = scf.for %%j = %%c0 to %%keys step %%c1 iter_args(%%acc = %%f0) -> (f32) {\n"
      "              %%slot = arith.addi %%g_slots, %%j : index\n"
      "              %%vbase = arith.muli %%slot, %%half : index\n"
      "              %%bi = arith.addi %%vbase, %%bd : index\n"
      "              %%byte = memref.load %%v_codes[%%bi] : memref<?xi8>\n"
      "              %%lo = arith.andi %%byte, %%i8_15 : i8\n"
      "              %%hi = arith.shrui %%byte, %%i8_4 : i8\n"
      "              %%code = arith.select %%is_odd, %%hi, %%lo : i8\n"
      "              %%fcode = arith.uitofp %%code : i8 to f32\n"
      "              %%wi = arith.addi %%hd, %%j : index\n"
      "              %%w = memref.load %%work[%%wi] : memref<?xf32>\n"
      "              %%vz = memref.load %%v_zero_points[%%slot] : memref<?xf32>\n"
      "              %%centred = arith.subf %%fcode, %%vz : f32\n"
      "              %%pw = arith.mulf %%w, %%centred : f32\n"
      "              %%next = arith.addf %%acc, %%pw : f32\n"
      "              scf.yield %%next : f32\n"
      "            }\n"
      "            %%oi = arith.addi %%row, %%d : index\n"
      "            memref.store %%sum, %%out[%%oi] : memref<?xf32>\n"
      "          }\n"
      "        }\n"
      "      }\n"
      "    }\n"
      "    return\n"
      "  }\n", exp_text);
}
