/* W4A4 matrix-multiply kernels as MLIR source, one module per instruction
 * set. The loops are scf.for over 1-D memrefs. The inner products use the
 * instruction set's integer multiply-add through llvm.call_intrinsic, or
 * plain vector arithmetic in the generic variant.
 *
 * Packed weights: rows in groups of 4; group g, block b (64 k) is 128
 * bytes at (g * blocks + b) * 128, 32 bytes per row. Byte j of a row contains
 * k = 64b + j in its low nibble and k = 64b + 32 + j in its high nibble.
 * Activation codes are one byte each, in panels [m / MR][blocks][MR][64]
 * (MR = 1 for the GEMV).
 *
 * Both kernels end with the same epilogue (zero points folded into
 * precomputed sums):
 *   y = (float)(dot - zw * asum - za * wsum + K * za * zw) * sa * sw. */
#include <stdio.h>
#include <string.h>

#include "Int4KernelsInternal.h"

const char iq_int4_lowering_pipeline[] =
    "builtin.module(convert-scf-to-cf,convert-vector-to-llvm,expand-strided-metadata,"
    "lower-affine,convert-math-to-llvm,convert-arith-to-llvm,convert-index-to-llvm,convert-cf-to-llvm,"
    "finalize-memref-to-llvm,convert-func-to-llvm,reconcile-unrealized-casts)";

/* The CPU names are LLVM's microarchitecture levels, so the variants tune
 * for no particular vendor. */
static const iq_int4_isa_t x86_isas[] = {
    {"generic", IQ_INT4_GENERIC, "x86_64-linux-gnu", "x86-64", ""},
    {"avx2", IQ_INT4_AVX2, "x86_64-linux-gnu", "x86-64-v3", ""},
    {"avxvnni", IQ_INT4_AVXVNNI, "x86_64-linux-gnu", "x86-64-v3", "+avxvnni"},
    {"avx512vnni", IQ_INT4_AVX512VNNI, "x86_64-linux-gnu", "x86-64-v4", "+avx512vnni"},
};
static const iq_int4_isa_t aarch64_isas[] = {
    {"generic", IQ_INT4_GENERIC, "aarch64-linux-gnu", "generic", "+neon"},
    {"dotprod", IQ_INT4_DOTPROD, "aarch64-linux-gnu", "generic", "+neon,+dotprod"},
    {"i8mm", IQ_INT4_I8MM, "aarch64-linux-gnu", "generic", "+neon,+dotprod,+i8mm"},
};

const iq_int4_isa_t *iq_int4_isas(const char *target, size_t *count) {
  if (strcmp(target, "x86_64-linux-gnu") == 0) {
    *count = sizeof x86_isas / sizeof x86_isas[0];
    return x86_isas;
  }
  if (strcmp(target, "aarch64-linux-gnu") == 0) {
    *count = sizeof aarch64_isas / sizeof aarch64_isas[0];
    return aarch64_isas;
  }
  *count = 0;
  return NULL;
}

const iq_int4_isa_t *iq_int4_isa_find(const char *target, const char *name) {
  size_t count;
  const iq_int4_isa_t *isas = iq_int4_isas(target, &count);
  for (size_t i = 0; i < count; ++i)
    if (strcmp(isas[i].name, name) == 0)
      return &isas[i];
  return NULL;
}

/* ---- Per-instruction-set inner products ------------------------------------
 * A block step adds lo . a0 + hi . a1 (32 weight nibbles against 32
 * activation codes each) to a narrow accumulator `acc`. A flush adds the
 * narrow accumulator to the wide one once per chunk of at most
 * IQ_INT4_CHUNK_BLOCKS blocks, and a reduction sums the wide lanes to i32. */

static const char *narrow_type(iq_int4_isa_kind_t kind) {
  switch (kind) {
  case IQ_INT4_GENERIC:
    return "vector<32xi16>";
  case IQ_INT4_AVX2:
    return "vector<16xi16>";
  case IQ_INT4_AVXVNNI:
  case IQ_INT4_AVX512VNNI:
    return "vector<8xi32>";
  case IQ_INT4_DOTPROD:
  case IQ_INT4_I8MM:
    return "vector<4xi32>";
  }
  return "";
}

static const char *wide_type(iq_int4_isa_kind_t kind) {
  switch (kind) {
  case IQ_INT4_GENERIC:
    return "vector<32xi32>";
  case IQ_INT4_AVX2:
  case IQ_INT4_AVXVNNI:
  case IQ_INT4_AVX512VNNI:
    return "vector<8xi32>";
  case IQ_INT4_DOTPROD:
  case IQ_INT4_I8MM:
    return "vector<4xi32>";
  }
  return "";
}

static void emit_isa_constants(iq_text_t *t, iq_int4_isa_kind_t kind) {
  const char *narrow = narrow_type(kind), *wide = wide_type(kind);
  iq_text_printf(t, "    %%narrow_zero = arith.constant dense<0> : %s\n", narrow);
  iq_text_printf(t, "    %%wide_zero = arith.constant dense<0> : %s\n", wide);
  if (kind == IQ_INT4_AVX2)
    iq_text_printf(t, "    %%ones16 = arith.constant dense<1> : vector<16xi16>\n");
}

/* Emits %<out> = acc + lo . a0 + hi . a1, with the activation bytes a0
 * and a1 read as unsigned codes, or as signed values in -15..15 when
 * `signed_a` (the weight nibbles are 0..15 either way). */
static void emit_block_step_as(iq_text_t *t, iq_int4_isa_kind_t kind, const char *out,
                               const char *acc, const char *lo, const char *hi, const char *a0,
                               const char *a1, bool signed_a) {
  switch (kind) {
  case IQ_INT4_GENERIC: {
    const char *pairs[2][2] = {{lo, a0}, {hi, a1}};
    for (int i = 0; i < 2; ++i) {
      iq_text_printf(t, "        %%%s_w%d = arith.extui %%%s : vector<32xi8> to vector<32xi16>\n",
                     out, i, pairs[i][0]);
      iq_text_printf(t, "        %%%s_a%d = arith.ext%si %%%s : vector<32xi8> to vector<32xi16>\n",
                     out, i, signed_a ? "s" : "u", pairs[i][1]);
      iq_text_printf(t, "        %%%s_p%d = arith.muli %%%s_w%d, %%%s_a%d : vector<32xi16>\n", out,
                     i, out, i, out, i);
    }
    iq_text_printf(t, "        %%%s_s = arith.addi %%%s_p0, %%%s_p1 : vector<32xi16>\n", out, out,
                   out);
    iq_text_printf(t, "        %%%s = arith.addi %%%s, %%%s_s : vector<32xi16>\n", out, acc, out);
    return;
  }
  case IQ_INT4_AVX2:
    /* vpmaddubsw: the first operand (the weights) is unsigned and the
     * second signed. A lane sums two products of at most 15 * 15 in
     * magnitude, so it never saturates. */
    iq_text_printf(t,
                   "        %%%s_p0 = llvm.call_intrinsic \"llvm.x86.avx2.pmadd.ub.sw\"(%%%s, %%%s) "
                   ": (vector<32xi8>, vector<32xi8>) -> vector<16xi16>\n"
                   "        %%%s_p1 = llvm.call_intrinsic \"llvm.x86.avx2.pmadd.ub.sw\"(%%%s, %%%s) "
                   ": (vector<32xi8>, vector<32xi8>) -> vector<16xi16>\n"
                   "        %%%s_s = arith.addi %%%s_p0, %%%s_p1 : vector<16xi16>\n"
                   "        %%%s = arith.addi %%%s, %%%s_s : vector<16xi16>\n",
                   out, lo, a0, out, hi, a1, out, out, out, out, acc, out);
    return;
  case IQ_INT4_AVXVNNI:
  case IQ_INT4_AVX512VNNI: {
    /* LLVM 19 declares vpdpbusd on i32 vectors; the bytes are bitcast.
     * Its first byte operand (the weights) is unsigned, the second signed.
     * The block's chain starts from zero and is added to `acc` last, so
     * the loop-carried dependency is one vpaddd, not two vpdpbusd. */
    const char *pairs[2][2] = {{lo, a0}, {hi, a1}};
    const char *previous = "narrow_zero";
    char name[2][64];
    for (int i = 0; i < 2; ++i) {
      iq_text_printf(t, "        %%%s_w%d = vector.bitcast %%%s : vector<32xi8> to vector<8xi32>\n",
                     out, i, pairs[i][0]);
      iq_text_printf(t, "        %%%s_a%d = vector.bitcast %%%s : vector<32xi8> to vector<8xi32>\n",
                     out, i, pairs[i][1]);
      snprintf(name[i], sizeof name[i], "%s_d%d", out, i);
      iq_text_printf(t,
                     "        %%%s = llvm.call_intrinsic \"llvm.x86.avx512.vpdpbusd.256\"(%%%s, "
                     "%%%s_w%d, %%%s_a%d) : (vector<8xi32>, vector<8xi32>, vector<8xi32>) -> "
                     "vector<8xi32>\n",
                     name[i], previous, out, i, out, i);
      previous = name[i];
    }
    iq_text_printf(t, "        %%%s = arith.addi %%%s, %%%s : vector<8xi32>\n", out, acc, previous);
    return;
  }
  case IQ_INT4_DOTPROD:
  case IQ_INT4_I8MM: {
    /* As for VNNI, the four udot of a block chain from zero, and one add
     * carries the sum across blocks. Signed activations use sdot, because
     * the weight nibbles are valid signed bytes too. */
    const char *pairs[2][2] = {{lo, a0}, {hi, a1}};
    const char *previous = "narrow_zero";
    char name[4][64];
    for (int i = 0; i < 4; ++i) {
      const char *w = pairs[i / 2][0], *a = pairs[i / 2][1];
      int offset = 16 * (i % 2);
      iq_text_printf(t,
                     "        %%%s_w%d = vector.extract_strided_slice %%%s {offsets = [%d], "
                     "sizes = [16], strides = [1]} : vector<32xi8> to vector<16xi8>\n"
                     "        %%%s_a%d = vector.extract_strided_slice %%%s {offsets = [%d], "
                     "sizes = [16], strides = [1]} : vector<32xi8> to vector<16xi8>\n",
                     out, i, w, offset, out, i, a, offset);
      snprintf(name[i], sizeof name[i], "%s_d%d", out, i);
      iq_text_printf(t,
                     "        %%%s = llvm.call_intrinsic \"llvm.aarch64.neon.%cdot.v4i32.v16i8\"("
                     "%%%s, %%%s_w%d, %%%s_a%d) : (vector<4xi32>, vector<16xi8>, vector<16xi8>) "
                     "-> vector<4xi32>\n",
                     name[i], signed_a ? 's' : 'u', previous, out, i, out, i);
      previous = name[i];
    }
    iq_text_printf(t, "        %%%s = arith.addi %%%s, %%%s : vector<4xi32>\n", out, acc, previous);
    return;
  }
  }
}

static void emit_block_step(iq_text_t *t, iq_int4_isa_kind_t kind, const char *out,
                            const char *acc, const char *lo, const char *hi, const char *a0,
                            const char *a1) {
  emit_block_step_as(t, kind, out, acc, lo, hi, a0, a1, false);
}

/* Emits %<out> = wide + widen(acc), the narrow lanes read as signed when
 * `signed_acc` (the sums of signed activations). */
static void emit_flush_as(iq_text_t *t, iq_int4_isa_kind_t kind, const char *out,
                          const char *wide, const char *acc, bool signed_acc) {
  const char *type = wide_type(kind);
  switch (kind) {
  case IQ_INT4_GENERIC:
    iq_text_printf(t, "      %%%s_e = arith.ext%si %%%s : vector<32xi16> to vector<32xi32>\n", out,
                   signed_acc ? "s" : "u", acc);
    break;
  case IQ_INT4_AVX2:
    iq_text_printf(t,
                   "      %%%s_e = llvm.call_intrinsic \"llvm.x86.avx2.pmadd.wd\"(%%%s, %%ones16) "
                   ": (vector<16xi16>, vector<16xi16>) -> vector<8xi32>\n",
                   out, acc);
    break;
  default:
    iq_text_printf(t, "      %%%s_e = arith.addi %%%s, %%wide_zero : %s\n", out, acc, type);
    break;
  }
  iq_text_printf(t, "      %%%s = arith.addi %%%s, %%%s_e : %s\n", out, wide, out, type);
}

static void emit_flush(iq_text_t *t, iq_int4_isa_kind_t kind, const char *out, const char *wide,
                       const char *acc) {
  emit_flush_as(t, kind, out, wide, acc, false);
}

static void emit_reduce(iq_text_t *t, iq_int4_isa_kind_t kind, const char *out, const char *wide) {
  iq_text_printf(t, "      %%%s = vector.reduction <add>, %%%s : %s into i32\n", out, wide,
                 wide_type(kind));
}

/* ---- Shared pieces ---------------------------------------------------------- */

static const char *memref_arguments =
    "%w: memref<?xi8>, %w_zero: memref<?xi32>, %w_sum: memref<?xi32>, %w_scale: memref<?xf32>, "
    "%a: memref<?xi8>, %a_zero: memref<?xi32>, %a_sum: memref<?xi32>, %a_scale: memref<?xf32>, "
    "%y: memref<?xf32>";

static void emit_common_constants(iq_text_t *t) {
  iq_text_printf(t,
                 "    %%c0 = arith.constant 0 : index\n"
                 "    %%c1 = arith.constant 1 : index\n"
                 "    %%c2 = arith.constant 2 : index\n"
                 "    %%c4 = arith.constant 4 : index\n"
                 "    %%c32 = arith.constant 32 : index\n"
                 "    %%c64 = arith.constant 64 : index\n"
                 "    %%c96 = arith.constant 96 : index\n"
                 "    %%c128 = arith.constant 128 : index\n"
                 "    %%chunk = arith.constant %d : index\n"
                 "    %%i32_zero = arith.constant 0 : i32\n"
                 "    %%nibble = arith.constant dense<15> : vector<32xi8>\n"
                 "    %%shift4 = arith.constant dense<4> : vector<32xi8>\n",
                 IQ_INT4_CHUNK_BLOCKS);
}

/* Emits %<p>_lo and %<p>_hi, the low and high nibbles of 32 weight bytes
 * at %w[%<index>]. */
static void emit_weight_load(iq_text_t *t, const char *p, const char *index) {
  iq_text_printf(t,
                 "        %%%s_v = vector.load %%w[%%%s] : memref<?xi8>, vector<32xi8>\n"
                 "        %%%s_lo = arith.andi %%%s_v, %%nibble : vector<32xi8>\n"
                 "        %%%s_hi = arith.shrui %%%s_v, %%shift4 : vector<32xi8>\n",
                 p, index, p, p, p, p);
}

/* Emits the epilogue for %<dot> of weight row %<row> and activation row
 * %<arow>, storing to %y[%<yindex>]. Expects %k32 (K as i32). */
static void emit_epilogue(iq_text_t *t, const char *p, const char *dot, const char *row,
                          const char *arow, const char *yindex, const char *indent) {
  iq_text_printf(t,
                 "%s%%%s_zw = memref.load %%w_zero[%%%s] : memref<?xi32>\n"
                 "%s%%%s_ws = memref.load %%w_sum[%%%s] : memref<?xi32>\n"
                 "%s%%%s_sw = memref.load %%w_scale[%%%s] : memref<?xf32>\n"
                 "%s%%%s_za = memref.load %%a_zero[%%%s] : memref<?xi32>\n"
                 "%s%%%s_as = memref.load %%a_sum[%%%s] : memref<?xi32>\n"
                 "%s%%%s_sa = memref.load %%a_scale[%%%s] : memref<?xf32>\n"
                 "%s%%%s_t1 = arith.muli %%%s_zw, %%%s_as : i32\n"
                 "%s%%%s_t2 = arith.muli %%%s_za, %%%s_ws : i32\n"
                 "%s%%%s_t3a = arith.muli %%k32, %%%s_za : i32\n"
                 "%s%%%s_t3 = arith.muli %%%s_t3a, %%%s_zw : i32\n"
                 "%s%%%s_c1 = arith.subi %%%s, %%%s_t1 : i32\n"
                 "%s%%%s_c2 = arith.subi %%%s_c1, %%%s_t2 : i32\n"
                 "%s%%%s_c3 = arith.addi %%%s_c2, %%%s_t3 : i32\n"
                 "%s%%%s_f = arith.sitofp %%%s_c3 : i32 to f32\n"
                 "%s%%%s_f1 = arith.mulf %%%s_f, %%%s_sa : f32\n"
                 "%s%%%s_f2 = arith.mulf %%%s_f1, %%%s_sw : f32\n"
                 "%smemref.store %%%s_f2, %%y[%%%s] : memref<?xf32>\n",
                 indent, p, row, indent, p, row, indent, p, row, indent, p, arow, indent, p, arow,
                 indent, p, arow, indent, p, p, p, indent, p, p, p, indent, p, p, indent, p, p, p,
                 indent, p, dot, p, indent, p, p, p, indent, p, p, p, indent, p, p, indent, p, p, p,
                 indent, p, p, p, indent, p, yindex);
}

/* ---- GEMV (M = 1 or 2) -------------------------------------------------------
 * Each iteration of the group loop streams one group's weights (4 rows)
 * once, against the 64 activation codes of each block (of each of the
 * `rows` activation rows) kept in registers. With two rows (iqk_<isa>_gemv2)
 * the activations are in panels of 2: row r of block b at (2b + r) * 64. */

static void emit_gemv(iq_text_t *t, const iq_int4_isa_t *isa, int rows) {
  iq_int4_isa_kind_t kind = isa->kind;
  const char *narrow = narrow_type(kind), *wide = wide_type(kind);
  int count = 4 * rows; /* accumulators: weight row r, activation row a at 4a + r */
  iq_text_printf(t,
                 "  func.func @iqk_%s_gemv%s(%s, %%blocks: index, %%k32: i32, %%n: index, "
                 "%%g_begin: index, %%g_end: index) {\n",
                 isa->name, rows == 2 ? "2" : "", memref_arguments);
  emit_common_constants(t);
  emit_isa_constants(t, kind);
  /* Software prefetch 4 KiB (32 blocks of a group) ahead of the stream. */
  iq_text_printf(t,
                 "    %%prefetch_distance = arith.constant 4096 : index\n"
                 "    %%group_bytes = arith.muli %%blocks, %%c128 : index\n"
                 "    %%a_stride = arith.constant %d : index\n"
                 "    scf.for %%g = %%g_begin to %%g_end step %%c1 {\n"
                 "      %%g_base = arith.muli %%g, %%group_bytes : index\n"
                 "      %%wide:%d = scf.for %%chunk_begin = %%c0 to %%blocks step %%chunk "
                 "iter_args(",
                 64 * rows, count);
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%%v%d = %%wide_zero", i ? ", " : "", i);
  iq_text_printf(t, ") -> (");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%s", i ? ", " : "", wide);
  iq_text_printf(t,
                 ") {\n"
                 "      %%chunk_limit = arith.addi %%chunk_begin, %%chunk : index\n"
                 "      %%chunk_end = arith.minui %%chunk_limit, %%blocks : index\n"
                 "      %%narrow:%d = scf.for %%b = %%chunk_begin to %%chunk_end step %%c1 "
                 "iter_args(",
                 count);
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%%h%d = %%narrow_zero", i ? ", " : "", i);
  iq_text_printf(t, ") -> (");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%s", i ? ", " : "", narrow);
  iq_text_printf(t,
                 ") {\n"
                 "        %%a_base = arith.muli %%b, %%a_stride : index\n");
  for (int a = 0; a < rows; ++a)
    iq_text_printf(t,
                   "        %%a%d_low = arith.addi %%a_base, %%c%d : index\n"
                   "        %%a%d_high = arith.addi %%a%d_low, %%c32 : index\n"
                   "        %%x%d_0 = vector.load %%a[%%a%d_low] : memref<?xi8>, vector<32xi8>\n"
                   "        %%x%d_1 = vector.load %%a[%%a%d_high] : memref<?xi8>, vector<32xi8>\n",
                   a, a == 0 ? 0 : 64, a, a, a, a, a, a);
  iq_text_printf(t,
                 "        %%b_offset = arith.muli %%b, %%c128 : index\n"
                 "        %%w0_index = arith.addi %%g_base, %%b_offset : index\n"
                 "        %%w1_index = arith.addi %%w0_index, %%c32 : index\n"
                 "        %%w2_index = arith.addi %%w0_index, %%c64 : index\n"
                 "        %%w3_index = arith.addi %%w0_index, %%c96 : index\n"
                 "        %%pf0 = arith.addi %%w0_index, %%prefetch_distance : index\n"
                 "        %%pf1 = arith.addi %%pf0, %%c64 : index\n"
                 "        memref.prefetch %%w[%%pf0], read, locality<0>, data : memref<?xi8>\n"
                 "        memref.prefetch %%w[%%pf1], read, locality<0>, data : memref<?xi8>\n");
  for (int r = 0; r < 4; ++r) {
    char p[16], index[16], lo[24], hi[24];
    snprintf(p, sizeof p, "w%d", r);
    snprintf(index, sizeof index, "w%d_index", r);
    emit_weight_load(t, p, index);
    snprintf(lo, sizeof lo, "w%d_lo", r);
    snprintf(hi, sizeof hi, "w%d_hi", r);
    for (int a = 0; a < rows; ++a) {
      char out[16], acc[16], x0[16], x1[16];
      snprintf(out, sizeof out, "n%d", 4 * a + r);
      snprintf(acc, sizeof acc, "h%d", 4 * a + r);
      snprintf(x0, sizeof x0, "x%d_0", a);
      snprintf(x1, sizeof x1, "x%d_1", a);
      emit_block_step(t, kind, out, acc, lo, hi, x0, x1);
    }
  }
  iq_text_printf(t, "        scf.yield ");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%%n%d", i ? ", " : "", i);
  iq_text_printf(t, " : ");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%s", i ? ", " : "", narrow);
  iq_text_printf(t, "\n      }\n");
  for (int i = 0; i < count; ++i) {
    char out[16], wide_in[16], acc[16];
    snprintf(out, sizeof out, "f%d", i);
    snprintf(wide_in, sizeof wide_in, "v%d", i);
    snprintf(acc, sizeof acc, "narrow#%d", i);
    emit_flush(t, kind, out, wide_in, acc);
  }
  iq_text_printf(t, "      scf.yield ");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%%f%d", i ? ", " : "", i);
  iq_text_printf(t, " : ");
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%s", i ? ", " : "", wide);
  iq_text_printf(t, "\n      }\n");
  iq_text_printf(t, "      %%g_row = arith.muli %%g, %%c4 : index\n");
  for (int r = 0; r < 4; ++r) {
    iq_text_printf(t,
                   "      %%r%d = arith.constant %d : index\n"
                   "      %%row%d = arith.addi %%g_row, %%r%d : index\n"
                   "      %%in%d = arith.cmpi ult, %%row%d, %%n : index\n"
                   "      scf.if %%in%d {\n",
                   r, r, r, r, r, r, r);
    for (int a = 0; a < rows; ++a) {
      char out[16], wide_in[16], p[16], row[16], arow[16], yindex[16];
      int i = 4 * a + r;
      snprintf(out, sizeof out, "dot%d", i);
      snprintf(wide_in, sizeof wide_in, "wide#%d", i);
      emit_reduce(t, kind, out, wide_in);
      snprintf(row, sizeof row, "row%d", r);
      snprintf(p, sizeof p, "e%d", i);
      snprintf(arow, sizeof arow, "c%d", a);
      if (a == 0) {
        snprintf(yindex, sizeof yindex, "%s", row);
      } else {
        iq_text_printf(t, "        %%y%d = arith.addi %%row%d, %%n : index\n", i, r);
        snprintf(yindex, sizeof yindex, "y%d", i);
      }
      emit_epilogue(t, p, out, row, arow, yindex, "        ");
    }
    iq_text_printf(t, "      }\n");
  }
  iq_text_printf(t, "    }\n    return\n  }\n");
}


/* ---- GEMV with an activation scale per column group -------------------------
 * iqk_<isa>_gemv_heads runs the o_proj of one token, whose input is
 * quantized per head: `slices` column groups of `slice_blocks` blocks
 * each. Weight slice s is a plain packed [n, 64 * slice_blocks] matrix at
 * %w[s * slice_bytes]. The activations are signed bytes (code minus the
 * group's zero point), slice s block b at %a[(s * slice_blocks + b) * 64].
 * For each row the integer dot product of every slice is exact, and
 *   t = fma(sa[s], dot[s], t) over s from 0.0 in order,
 *   y = sw * (t - zw * correction)
 * where correction = sum over s of sa[s] * (code sum[s] - 64 * slice_blocks
 * * zero point[s]) comes from the caller. The float operations are the
 * same on every instruction set, so every set gives the same bits. */
static void emit_gemv_heads(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_int4_isa_kind_t kind = isa->kind;
  const char *narrow = narrow_type(kind);
  iq_text_printf(t,
                 "  func.func @iqk_%s_gemv_heads(%%w: memref<?xi8>, %%w_zero: memref<?xi32>, "
                 "%%w_scale: memref<?xf32>, %%a: memref<?xi8>, %%a_scale: memref<?xf32>, "
                 "%%y: memref<?xf32>, %%slices: index, %%slice_blocks: index, "
                 "%%slice_bytes: index, %%n: index, %%g_begin: index, %%g_end: index, "
                 "%%correction: f32) {\n",
                 isa->name);

  emit_common_constants(t);
  emit_isa_constants(t, kind);

  /* Per group of 4 rows: per head slice, the integer dots of its blocks,
   * then fma into the float sums of the rows. */
  iq_text_printf(t,
                 "    %%f0 = arith.constant 0.0 : f32\n"
                 "    %%group_bytes = arith.muli %%slice_blocks, %%c128 : index\n"
                 "    scf.for %%g = %%g_begin to %%g_end step %%c1 {\n"
                 "      %%g_base = arith.muli %%g, %%group_bytes : index\n"
                 "      %%acc:4 = scf.for %%s = %%c0 to %%slices step %%c1 "
                 "iter_args(%%t0 = %%f0, %%t1 = %%f0, %%t2 = %%f0, %%t3 = %%f0) -> "
                 "(f32, f32, f32, f32) {\n"
                 "        %%s_base = arith.muli %%s, %%slice_bytes : index\n"
                 "        %%sg_base = arith.addi %%s_base, %%g_base : index\n"
                 "        %%s_blocks = arith.muli %%s, %%slice_blocks : index\n"
                 "        %%narrow:4 = scf.for %%b = %%c0 to %%slice_blocks step %%c1 "
                 "iter_args(%%h0 = %%narrow_zero, %%h1 = %%narrow_zero, %%h2 = %%narrow_zero, "
                 "%%h3 = %%narrow_zero) -> (%s, %s, %s, %s) {\n"
                 "        %%a_block = arith.addi %%s_blocks, %%b : index\n"
                 "        %%a0_low = arith.muli %%a_block, %%c64 : index\n"
                 "        %%a0_high = arith.addi %%a0_low, %%c32 : index\n"
                 "        %%x0_0 = vector.load %%a[%%a0_low] : memref<?xi8>, vector<32xi8>\n"
                 "        %%x0_1 = vector.load %%a[%%a0_high] : memref<?xi8>, vector<32xi8>\n"
                 "        %%b_offset = arith.muli %%b, %%c128 : index\n"
                 "        %%w0_index = arith.addi %%sg_base, %%b_offset : index\n"
                 "        %%w1_index = arith.addi %%w0_index, %%c32 : index\n"
                 "        %%w2_index = arith.addi %%w0_index, %%c64 : index\n"
                 "        %%w3_index = arith.addi %%w0_index, %%c96 : index\n",
                 narrow, narrow, narrow, narrow);

  for (int r = 0; r < 4; ++r) {
    char p[16], index[16], lo[24], hi[24], out[16], acc[16];
    snprintf(p, sizeof p, "w%d", r);
    snprintf(index, sizeof index, "w%d_index", r);
    emit_weight_load(t, p, index);
    snprintf(lo, sizeof lo, "w%d_lo", r);
    snprintf(hi, sizeof hi, "w%d_hi", r);
    snprintf(out, sizeof out, "n%d", r);
    snprintf(acc, sizeof acc, "h%d", r);
    emit_block_step_as(t, kind, out, acc, lo, hi, "x0_0", "x0_1", true);
  }
  iq_text_printf(t, "        scf.yield %%n0, %%n1, %%n2, %%n3 : %s, %s, %s, %s\n      }\n", narrow,
                 narrow, narrow, narrow);

  iq_text_printf(t, "        %%sa = memref.load %%a_scale[%%s] : memref<?xf32>\n");

  for (int r = 0; r < 4; ++r) {
    char out[16], acc[16], dot[16];
    snprintf(out, sizeof out, "flushed%d", r);
    snprintf(acc, sizeof acc, "narrow#%d", r);
    emit_flush_as(t, kind, out, "wide_zero", acc, true);
    snprintf(dot, sizeof dot, "dot%d", r);
    emit_reduce(t, kind, dot, out);
    iq_text_printf(t,
                   "        %%dotf%d = arith.sitofp %%dot%d : i32 to f32\n"
                   "        %%u%d = math.fma %%sa, %%dotf%d, %%t%d : f32\n",
                   r, r, r, r, r);
  }
  iq_text_printf(t,
                 "        scf.yield %%u0, %%u1, %%u2, %%u3 : f32, f32, f32, f32\n"
                 "      }\n"
                 "      %%g_row = arith.muli %%g, %%c4 : index\n");

  for (int r = 0; r < 4; ++r)
    iq_text_printf(t,
                   "      %%r%d = arith.constant %d : index\n"
                   "      %%row%d = arith.addi %%g_row, %%r%d : index\n"
                   "      %%in%d = arith.cmpi ult, %%row%d, %%n : index\n"
                   "      scf.if %%in%d {\n"
                   "        %%zw%d = memref.load %%w_zero[%%row%d] : memref<?xi32>\n"
                   "        %%sw%d = memref.load %%w_scale[%%row%d] : memref<?xf32>\n"
                   "        %%zwf%d = arith.sitofp %%zw%d : i32 to f32\n"
                   "        %%zc%d = arith.mulf %%zwf%d, %%correction : f32\n"
                   "        %%d%d = arith.subf %%acc#%d, %%zc%d : f32\n"
                   "        %%v%d = arith.mulf %%sw%d, %%d%d : f32\n"
                   "        memref.store %%v%d, %%y[%%row%d] : memref<?xf32>\n"
                   "      }\n",
                   r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r);

  iq_text_printf(t, "    }\n    return\n  }\n");
}

/* ---- GEMM (M > 1) ------------------------------------------------------------
 * Loop nest per thread (rows row_begin..row_end of W, panels
 * panel_begin..panel_end of A):
 *   chunk of <= 32 blocks  >  tile of 64 W rows  >  panel of MR A rows  >  W row
 * The A panel's chunk (MR * 32 * 64 bytes) stays in L1 across the rows of
 * a tile, and the tile's chunk of W stays in L2 across the panels.
 * Partial dots of earlier chunks wait in %partial ([panels * MR, n] i32);
 * the last chunk applies the epilogue instead. */

#define GEMM_TILE_ROWS 64

static void emit_gemm_header(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_text_printf(t,
                 "  func.func @iqk_%s_gemm(%s, %%partial: memref<?xi32>, %%blocks: index, "
                 "%%k32: i32, %%n: index, %%m: index, %%g_begin: index, %%g_end: index, "
                 "%%panel_begin: index, %%panel_end: index) {\n",
                 isa->name, memref_arguments);
  emit_common_constants(t);
  emit_isa_constants(t, isa->kind);
  iq_text_printf(t,
                 "    %%mr = arith.constant %d : index\n"
                 "    %%tile = arith.constant %d : index\n"
                 "    %%group_bytes = arith.muli %%blocks, %%c128 : index\n"
                 "    %%row_begin = arith.muli %%g_begin, %%c4 : index\n"
                 "    %%row_limit = arith.muli %%g_end, %%c4 : index\n"
                 "    %%row_end = arith.minui %%row_limit, %%n : index\n"
                 "    %%last_chunk = arith.subi %%blocks, %%c1 : index\n"
                 "    scf.for %%chunk_begin = %%c0 to %%blocks step %%chunk {\n"
                 "     %%chunk_limit = arith.addi %%chunk_begin, %%chunk : index\n"
                 "     %%chunk_end = arith.minui %%chunk_limit, %%blocks : index\n"
                 "     %%first = arith.cmpi eq, %%chunk_begin, %%c0 : index\n"
                 "     %%last = arith.cmpi eq, %%chunk_end, %%blocks : index\n"
                 "     scf.for %%tile_begin = %%row_begin to %%row_end step %%tile {\n"
                 "      %%tile_limit = arith.addi %%tile_begin, %%tile : index\n"
                 "      %%tile_end = arith.minui %%tile_limit, %%row_end : index\n"
                 "      scf.for %%panel = %%panel_begin to %%panel_end step %%c1 {\n"
                 "      %%panel_blocks = arith.muli %%panel, %%blocks : index\n"
                 "      %%panel_row = arith.muli %%panel, %%mr : index\n",
                 IQ_INT4_PANEL_ROWS, GEMM_TILE_ROWS);
}

/* Emits the accumulate-or-finish step for the i32 value %<value> of A row
 * %panel_row + r and W row %<row>; `tag` keeps the SSA names unique. */
static void emit_gemm_store(iq_text_t *t, const char *tag, int r, const char *value,
                            const char *row) {
  char p[32];
  snprintf(p, sizeof p, "%s%d", tag, r);
  iq_text_printf(t,
                 "      %%%s_off = arith.constant %d : index\n"
                 "      %%%s_mi = arith.addi %%panel_row, %%%s_off : index\n"
                 "      %%%s_mrow = arith.muli %%%s_mi, %%n : index\n"
                 "      %%%s_pi = arith.addi %%%s_mrow, %%%s : index\n"
                 "      %%%s_prev = scf.if %%first -> (i32) {\n"
                 "        scf.yield %%i32_zero : i32\n"
                 "      } else {\n"
                 "        %%%s_loaded = memref.load %%partial[%%%s_pi] : memref<?xi32>\n"
                 "        scf.yield %%%s_loaded : i32\n"
                 "      }\n"
                 "      %%%s_total = arith.addi %%%s_prev, %%%s : i32\n"
                 "      scf.if %%last {\n"
                 "        %%%s_live = arith.cmpi ult, %%%s_mi, %%m : index\n"
                 "        scf.if %%%s_live {\n",
                 p, r, p, p, p, p, p, p, row, p, p, p, p, p, p, value, p, p, p);
  char e[40], dot[40], arow[40], yindex[40];
  snprintf(e, sizeof e, "%s_e", p);
  snprintf(dot, sizeof dot, "%s_total", p);
  snprintf(arow, sizeof arow, "%s_mi", p);
  snprintf(yindex, sizeof yindex, "%s_pi", p);
  emit_epilogue(t, e, dot, row, arow, yindex, "          ");
  iq_text_printf(t,
                 "        }\n"
                 "      } else {\n"
                 "        memref.store %%%s_total, %%partial[%%%s_pi] : memref<?xi32>\n"
                 "      }\n",
                 p, p);
}

static void emit_gemm_footer(iq_text_t *t) {
  iq_text_printf(t, "      }\n     }\n    }\n    return\n  }\n");
}

static void emit_type_list(iq_text_t *t, const char *type, int count) {
  for (int i = 0; i < count; ++i)
    iq_text_printf(t, "%s%s", i ? ", " : "", type);
}

/* MR x 1 micro-kernel: one W row against MR A rows, MR narrow
 * accumulators, A loaded from L1 once per block and row. */
static void emit_gemm(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_int4_isa_kind_t kind = isa->kind;
  const char *narrow = narrow_type(kind);
  const int mr = IQ_INT4_PANEL_ROWS;
  emit_gemm_header(t, isa);
  iq_text_printf(t,
                 "      scf.for %%row = %%tile_begin to %%tile_end step %%c1 {\n"
                 "      %%group = arith.divui %%row, %%c4 : index\n"
                 "      %%in_group = arith.remui %%row, %%c4 : index\n"
                 "      %%group_base = arith.muli %%group, %%group_bytes : index\n"
                 "      %%row_offset = arith.muli %%in_group, %%c32 : index\n"
                 "      %%row_base = arith.addi %%group_base, %%row_offset : index\n"
                 "      %%narrow:%d = scf.for %%b = %%chunk_begin to %%chunk_end step %%c1 "
                 "iter_args(",
                 mr);
  for (int r = 0; r < mr; ++r)
    iq_text_printf(t, "%s%%h%d = %%narrow_zero", r ? ", " : "", r);
  iq_text_printf(t, ") -> (");
  emit_type_list(t, narrow, mr);
  iq_text_printf(t,
                 ") {\n"
                 "        %%b_offset = arith.muli %%b, %%c128 : index\n"
                 "        %%w_index = arith.addi %%row_base, %%b_offset : index\n");
  emit_weight_load(t, "wv", "w_index");
  iq_text_printf(t,
                 "        %%pb = arith.addi %%panel_blocks, %%b : index\n"
                 "        %%pb_rows = arith.muli %%pb, %%mr : index\n");
  for (int r = 0; r < mr; ++r) {
    iq_text_printf(t,
                   "        %%ar%d_off = arith.constant %d : index\n"
                   "        %%ar%d_row = arith.addi %%pb_rows, %%ar%d_off : index\n"
                   "        %%ar%d_index = arith.muli %%ar%d_row, %%c64 : index\n"
                   "        %%ar%d_high = arith.addi %%ar%d_index, %%c32 : index\n"
                   "        %%x%d_0 = vector.load %%a[%%ar%d_index] : memref<?xi8>, vector<32xi8>\n"
                   "        %%x%d_1 = vector.load %%a[%%ar%d_high] : memref<?xi8>, vector<32xi8>\n",
                   r, r, r, r, r, r, r, r, r, r, r, r);
    char out[16], acc[16], a0[16], a1[16];
    snprintf(out, sizeof out, "n%d", r);
    snprintf(acc, sizeof acc, "h%d", r);
    snprintf(a0, sizeof a0, "x%d_0", r);
    snprintf(a1, sizeof a1, "x%d_1", r);
    emit_block_step(t, kind, out, acc, "wv_lo", "wv_hi", a0, a1);
  }
  iq_text_printf(t, "        scf.yield ");
  for (int r = 0; r < mr; ++r)
    iq_text_printf(t, "%s%%n%d", r ? ", " : "", r);
  iq_text_printf(t, " : ");
  emit_type_list(t, narrow, mr);
  iq_text_printf(t, "\n      }\n");
  for (int r = 0; r < mr; ++r) {
    char out[16], acc[16], sum[16];
    snprintf(out, sizeof out, "flushed%d", r);
    snprintf(acc, sizeof acc, "narrow#%d", r);
    emit_flush_as(t, kind, out, "wide_zero", acc, true);
    snprintf(sum, sizeof sum, "s%d", r);
    emit_reduce(t, kind, sum, out);
    emit_gemm_store(t, "st", r, sum, "row");
  }
  iq_text_printf(t, "      }\n");
  emit_gemm_footer(t);
}

/* i8mm micro-kernel: two W rows (row, row + 1 of one group) against MR A
 * rows in pairs. ummla multiplies a 2x8 block of A by the transpose of a
 * 2x8 block of W, so each 8-k slice of two rows is gathered into one
 * 16-byte vector with a shuffle. Lane 2i + j of a pair's accumulator is
 * A row 2q + i times W row row + j. */
static void emit_gemm_i8mm(iq_text_t *t, const iq_int4_isa_t *isa) {
  const int mr = IQ_INT4_PANEL_ROWS, pairs = IQ_INT4_PANEL_ROWS / 2;
  emit_gemm_header(t, isa);
  iq_text_printf(t,
                 "      scf.for %%row = %%tile_begin to %%tile_end step %%c2 {\n"
                 "      %%row_next = arith.addi %%row, %%c1 : index\n"
                 "      %%group = arith.divui %%row, %%c4 : index\n"
                 "      %%in_group = arith.remui %%row, %%c4 : index\n"
                 "      %%group_base = arith.muli %%group, %%group_bytes : index\n"
                 "      %%row_offset = arith.muli %%in_group, %%c32 : index\n"
                 "      %%row_base = arith.addi %%group_base, %%row_offset : index\n"
                 "      %%acc:%d = scf.for %%b = %%chunk_begin to %%chunk_end step %%c1 "
                 "iter_args(",
                 pairs);
  for (int q = 0; q < pairs; ++q)
    iq_text_printf(t, "%s%%h%d = %%narrow_zero", q ? ", " : "", q);
  iq_text_printf(t, ") -> (");
  emit_type_list(t, "vector<4xi32>", pairs);
  iq_text_printf(t,
                 ") {\n"
                 "        %%b_offset = arith.muli %%b, %%c128 : index\n"
                 "        %%w_index = arith.addi %%row_base, %%b_offset : index\n"
                 "        %%w_next = arith.addi %%w_index, %%c32 : index\n");
  emit_weight_load(t, "wa", "w_index");
  emit_weight_load(t, "wb", "w_next");
  iq_text_printf(t,
                 "        %%pb = arith.addi %%panel_blocks, %%b : index\n"
                 "        %%pb_rows = arith.muli %%pb, %%mr : index\n");
  for (int r = 0; r < mr; ++r)
    iq_text_printf(t,
                   "        %%ar%d_off = arith.constant %d : index\n"
                   "        %%ar%d_row = arith.addi %%pb_rows, %%ar%d_off : index\n"
                   "        %%ar%d_index = arith.muli %%ar%d_row, %%c64 : index\n"
                   "        %%ar%d_high = arith.addi %%ar%d_index, %%c32 : index\n"
                   "        %%x%d_0 = vector.load %%a[%%ar%d_index] : memref<?xi8>, vector<32xi8>\n"
                   "        %%x%d_1 = vector.load %%a[%%ar%d_high] : memref<?xi8>, vector<32xi8>\n",
                   r, r, r, r, r, r, r, r, r, r, r, r);
  /* Slices: s = 0..3 from the low nibbles (k 8s..8s+7), 4..7 from the
   * high nibbles (k 32 + 8(s-4)...). */
  for (int s = 0; s < 8; ++s) {
    const char *part = s < 4 ? "lo" : "hi";
    int base = 8 * (s % 4);
    iq_text_printf(t, "        %%ws%d = vector.shuffle %%wa_%s, %%wb_%s [", s, part, part);
    for (int i = 0; i < 16; ++i)
      iq_text_printf(t, "%s%d", i ? ", " : "", i < 8 ? base + i : 32 + base + i - 8);
    iq_text_printf(t, "] : vector<32xi8>, vector<32xi8>\n");
  }
  for (int q = 0; q < pairs; ++q) {
    const char *previous_name = NULL;
    char previous[24];
    snprintf(previous, sizeof previous, "h%d", q);
    previous_name = previous;
    for (int s = 0; s < 8; ++s) {
      int half = s < 4 ? 0 : 1;
      int base = 8 * (s % 4);
      iq_text_printf(t, "        %%as%d_%d = vector.shuffle %%x%d_%d, %%x%d_%d [", q, s, 2 * q,
                     half, 2 * q + 1, half);
      for (int i = 0; i < 16; ++i)
        iq_text_printf(t, "%s%d", i ? ", " : "", i < 8 ? base + i : 32 + base + i - 8);
      iq_text_printf(t, "] : vector<32xi8>, vector<32xi8>\n");
      char name[24];
      if (s < 7)
        snprintf(name, sizeof name, "m%d_%d", q, s);
      else
        snprintf(name, sizeof name, "n%d", q);
      iq_text_printf(t,
                     "        %%%s = llvm.call_intrinsic \"llvm.aarch64.neon.ummla.v4i32.v16i8\"("
                     "%%%s, %%as%d_%d, %%ws%d) : (vector<4xi32>, vector<16xi8>, vector<16xi8>) -> "
                     "vector<4xi32>\n",
                     name, previous_name, q, s, s);
      snprintf(previous, sizeof previous, "%s", name);
    }
  }
  iq_text_printf(t, "        scf.yield ");
  for (int q = 0; q < pairs; ++q)
    iq_text_printf(t, "%s%%n%d", q ? ", " : "", q);
  iq_text_printf(t, " : ");
  emit_type_list(t, "vector<4xi32>", pairs);
  iq_text_printf(t, "\n      }\n");
  /* W row row + 1 always exists in the packed groups (rows are padded to a
   * multiple of 4), but only rows below n are stored. */
  iq_text_printf(t, "      %%second_live = arith.cmpi ult, %%row_next, %%row_end : index\n");
  for (int j = 0; j < 2; ++j) {
    if (j == 1)
      iq_text_printf(t, "      scf.if %%second_live {\n");
    for (int r = 0; r < mr; ++r) {
      int q = r / 2, i = r % 2;
      char sum[16];
      snprintf(sum, sizeof sum, "s%d_%d", j, r);
      iq_text_printf(t, "      %%%s = vector.extract %%acc#%d[%d] : i32 from vector<4xi32>\n", sum,
                     q, 2 * i + j);
    }
    for (int r = 0; r < mr; ++r) {
      char sum[16];
      snprintf(sum, sizeof sum, "s%d_%d", j, r);
      emit_gemm_store(t, j == 0 ? "st" : "su", r, sum, j == 0 ? "row" : "row_next");
    }
    if (j == 1)
      iq_text_printf(t, "      }\n");
  }
  iq_text_printf(t, "      }\n");
  emit_gemm_footer(t);
}

char *iq_int4_kernel_source(const iq_int4_isa_t *isa, iq_error_t **error) {
  iq_text_t text = {0};
  iq_text_printf(&text, "module {\n");
  if (!iq_int4_emit_hadamard_tables(&text, error)) {
    iq_text_free(&text);
    return NULL;
  }
  iq_int4_emit_quantize(&text, isa, 0);
  iq_int4_emit_quantize(&text, isa, 1);
  for (int f = 0; f < IQ_INT4_HADAMARD_FACTOR_COUNT; ++f)
    iq_int4_emit_quantize(&text, isa, iq_int4_hadamard_factors[f]);
  iq_int4_emit_kv_append(&text, isa);
  iq_int4_emit_attention(&text, isa);
  emit_gemv(&text, isa, 1);
  emit_gemv(&text, isa, 2);
  emit_gemv_heads(&text, isa);
  iq_int4_emit_linear_f16(&text, isa);
  if (isa->kind == IQ_INT4_I8MM)
    emit_gemm_i8mm(&text, isa);
  else
    emit_gemm(&text, isa);
  iq_text_printf(&text, "}\n");
  if (text.failed) {
    iq_text_free(&text);
    iq_error_set(error, NULL, NULL, NULL, "out of memory generating the %s kernels", isa->name);
    return NULL;
  }
  return text.data;
}
