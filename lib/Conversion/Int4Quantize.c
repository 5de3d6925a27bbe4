/* Per-token 4-bit activation quantizers as MLIR source, optionally fused
 * with the online Hadamard transform, writing the panel layout the GEMM
 * and GEMV kernels read. Each row of x is read from memory once: it is
 * copied into a per-thread work buffer, transformed there, and quantized
 * from there.
 *
 * The transform and the quantizer repeat the operations of
 * iq_hadamard_transform and iq_quantize_per_token (iq/quant.h) in the same
 * order and without fast-math flags, so the codes, scales and zero points
 * are equal to theirs bit for bit:
 *   1. Walsh-Hadamard butterflies along each of the F rows of x viewed as
 *      [F, K / F] (Sylvester order), then a multiply by 1/sqrt(K);
 *   2. for F > 1, out[a][c] = sum over b of hadF[a][b] * in[b][c], summed
 *      in order of b starting from 0.0;
 *   3. xmax = clip * max(max x, 0), xmin = clip * min(min x, 0) ([-1, 1]
 *      when both are 0), s = max((xmax - xmin) / 15, 1e-8), z = roundeven(-xmin / s),
 *      code = clamp(roundeven(x / s) + z, 0, 15). */
#include "Int4KernelsInternal.h"

#include <stdio.h>
#include <stdlib.h>

#include "iq/quant.h"

const int iq_int4_hadamard_factors[IQ_INT4_HADAMARD_FACTOR_COUNT] = {
    172, 156, 140, 108, 60, 52, 36, 28, 44, 40, 20, 12};

bool iq_int4_emit_hadamard_tables(iq_text_t *t, iq_error_t **error) {
  for (int f = 0; f < IQ_INT4_HADAMARD_FACTOR_COUNT; ++f) {
    int order = iq_int4_hadamard_factors[f];
    double *matrix = malloc(sizeof(double) * (size_t)order * (size_t)order);
    if (!matrix)
      return iq_error_set(error, NULL, NULL, NULL, "out of memory for a Hadamard table");
    /* The transform of size `order` is hadF / sqrt(order), so the signs of
     * its entries are the table's. */
    if (!iq_hadamard_matrix((size_t)order, matrix, error)) {
      free(matrix);
      return false;
    }
    iq_text_printf(t, "  memref.global \"private\" constant @iqk_hadamard_%d : memref<%dxf32> = dense<[",
                   order, order * order);
    for (int i = 0; i < order * order; ++i)
      iq_text_printf(t, "%s%s", i ? ", " : "", matrix[i] > 0.0 ? "1.0" : "-1.0");
    iq_text_printf(t, "]>\n");
    free(matrix);
  }
  return true;
}

/* Emits the in-place butterflies on %work[base .. base + m) of each of
 * the F parts, then the multiply by 1/sqrt(K). Each butterfly computes
 * (a + b, a - b) as the reference does, so every variant gives the same
 * bits. For m >= 16 the stages of distance 1, 2, 4 and 8 run on 16 values
 * at a time with shuffles (lane l takes a = x[l & ~h] and b = x[l | h],
 * and keeps a - b where bit h of l is set), and the longer stages on 16
 * consecutive pairs at a time. */
static void emit_fwht(iq_text_t *t) {
  iq_text_printf(t,
                 "      %%m_wide = arith.cmpi uge, %%m, %%c16 : index\n"
                 "      scf.if %%m_wide {\n"
                 "      %%upper1 = arith.constant dense<[false, true, false, true, false, true, false, true, false, true, false, true, false, true, false, true]> : vector<16xi1>\n"
                 "      %%upper2 = arith.constant dense<[false, false, true, true, false, false, true, true, false, false, true, true, false, false, true, true]> : vector<16xi1>\n"
                 "      %%upper4 = arith.constant dense<[false, false, false, false, true, true, true, true, false, false, false, false, true, true, true, true]> : vector<16xi1>\n"
                 "      %%upper8 = arith.constant dense<[false, false, false, false, false, false, false, false, true, true, true, true, true, true, true, true]> : vector<16xi1>\n"
                 "      scf.for %%part = %%c0 to %%factor step %%c1 {\n"
                 "        %%base = arith.muli %%part, %%m : index\n"
                 "        %%end = arith.addi %%base, %%m : index\n"
                 "        scf.for %%chunk = %%base to %%end step %%c16 {\n"
                 "          %%v0 = vector.load %%work[%%chunk] : memref<?xf32>, vector<16xf32>\n"
                 "          %%lo1 = vector.shuffle %%v0, %%v0 [0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14] : vector<16xf32>, vector<16xf32>\n"
                 "          %%hi1 = vector.shuffle %%v0, %%v0 [1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15] : vector<16xf32>, vector<16xf32>\n"
                 "          %%sum1 = arith.addf %%lo1, %%hi1 : vector<16xf32>\n"
                 "          %%diff1 = arith.subf %%lo1, %%hi1 : vector<16xf32>\n"
                 "          %%v2 = arith.select %%upper1, %%diff1, %%sum1 : vector<16xi1>, vector<16xf32>\n"
                 "          %%lo2 = vector.shuffle %%v2, %%v2 [0, 1, 0, 1, 4, 5, 4, 5, 8, 9, 8, 9, 12, 13, 12, 13] : vector<16xf32>, vector<16xf32>\n"
                 "          %%hi2 = vector.shuffle %%v2, %%v2 [2, 3, 2, 3, 6, 7, 6, 7, 10, 11, 10, 11, 14, 15, 14, 15] : vector<16xf32>, vector<16xf32>\n"
                 "          %%sum2 = arith.addf %%lo2, %%hi2 : vector<16xf32>\n"
                 "          %%diff2 = arith.subf %%lo2, %%hi2 : vector<16xf32>\n"
                 "          %%v4 = arith.select %%upper2, %%diff2, %%sum2 : vector<16xi1>, vector<16xf32>\n"
                 "          %%lo4 = vector.shuffle %%v4, %%v4 [0, 1, 2, 3, 0, 1, 2, 3, 8, 9, 10, 11, 8, 9, 10, 11] : vector<16xf32>, vector<16xf32>\n"
                 "          %%hi4 = vector.shuffle %%v4, %%v4 [4, 5, 6, 7, 4, 5, 6, 7, 12, 13, 14, 15, 12, 13, 14, 15] : vector<16xf32>, vector<16xf32>\n"
                 "          %%sum4 = arith.addf %%lo4, %%hi4 : vector<16xf32>\n"
                 "          %%diff4 = arith.subf %%lo4, %%hi4 : vector<16xf32>\n"
                 "          %%v8 = arith.select %%upper4, %%diff4, %%sum4 : vector<16xi1>, vector<16xf32>\n"
                 "          %%lo8 = vector.shuffle %%v8, %%v8 [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7] : vector<16xf32>, vector<16xf32>\n"
                 "          %%hi8 = vector.shuffle %%v8, %%v8 [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15] : vector<16xf32>, vector<16xf32>\n"
                 "          %%sum8 = arith.addf %%lo8, %%hi8 : vector<16xf32>\n"
                 "          %%diff8 = arith.subf %%lo8, %%hi8 : vector<16xf32>\n"
                 "          %%v16 = arith.select %%upper8, %%diff8, %%sum8 : vector<16xi1>, vector<16xf32>\n"
                 "          vector.store %%v16, %%work[%%chunk] : memref<?xf32>, vector<16xf32>\n"
                 "        }\n"
                 "        scf.for %%stage = %%c4 to %%log2m step %%c1 {\n"
                 "          %%h = arith.shli %%c1, %%stage : index\n"
                 "          %%h2 = arith.shli %%h, %%c1 : index\n"
                 "          scf.for %%i = %%base to %%end step %%h2 {\n"
                 "            %%j_end = arith.addi %%i, %%h : index\n"
                 "            scf.for %%j = %%i to %%j_end step %%c16 {\n"
                 "              %%jh = arith.addi %%j, %%h : index\n"
                 "              %%va = vector.load %%work[%%j] : memref<?xf32>, vector<16xf32>\n"
                 "              %%vb = vector.load %%work[%%jh] : memref<?xf32>, vector<16xf32>\n"
                 "              %%vs = arith.addf %%va, %%vb : vector<16xf32>\n"
                 "              %%vd = arith.subf %%va, %%vb : vector<16xf32>\n"
                 "              vector.store %%vs, %%work[%%j] : memref<?xf32>, vector<16xf32>\n"
                 "              vector.store %%vd, %%work[%%jh] : memref<?xf32>, vector<16xf32>\n"
                 "            }\n"
                 "          }\n"
                 "        }\n"
                 "      }\n"
                 "      } else {\n"
                 "      scf.for %%part = %%c0 to %%factor step %%c1 {\n"
                 "        %%base = arith.muli %%part, %%m : index\n"
                 "        %%end = arith.addi %%base, %%m : index\n"
                 "        scf.for %%stage = %%c0 to %%log2m step %%c1 {\n"
                 "          %%h = arith.shli %%c1, %%stage : index\n"
                 "          %%h2 = arith.shli %%h, %%c1 : index\n"
                 "          scf.for %%i = %%base to %%end step %%h2 {\n"
                 "            %%j_end = arith.addi %%i, %%h : index\n"
                 "            scf.for %%j = %%i to %%j_end step %%c1 {\n"
                 "              %%jh = arith.addi %%j, %%h : index\n"
                 "              %%fa = memref.load %%work[%%j] : memref<?xf32>\n"
                 "              %%fb = memref.load %%work[%%jh] : memref<?xf32>\n"
                 "              %%fs = arith.addf %%fa, %%fb : f32\n"
                 "              %%fd = arith.subf %%fa, %%fb : f32\n"
                 "              memref.store %%fs, %%work[%%j] : memref<?xf32>\n"
                 "              memref.store %%fd, %%work[%%jh] : memref<?xf32>\n"
                 "            }\n"
                 "          }\n"
                 "        }\n"
                 "      }\n"
                 "      }\n"
                 "      scf.for %%i = %%c0 to %%k step %%c1 {\n"
                 "        %%fv = memref.load %%work[%%i] : memref<?xf32>\n"
                 "        %%fw = arith.mulf %%fv, %%hscale : f32\n"
                 "        memref.store %%fw, %%work[%%i] : memref<?xf32>\n"
                 "      }\n");
}

/* Emits the mix with hadF into %work[k .. 2k): 16 columns at a time when
 * m >= 16 (m is a power of two), else one at a time; the same additions
 * in the same order either way. */
static void emit_mix(iq_text_t *t, int factor) {
  iq_text_printf(t,
                 "      %%table = memref.get_global @iqk_hadamard_%d : memref<%dxf32>\n"
                 "      %%mix_wide = arith.cmpi uge, %%m, %%c16 : index\n"
                 "      scf.for %%a = %%c0 to %%factor step %%c1 {\n"
                 "        %%a_m = arith.muli %%a, %%m : index\n"
                 "        %%out_base = arith.addi %%k, %%a_m : index\n"
                 "        scf.for %%c = %%c0 to %%m step %%c1 {\n"
                 "          %%oc = arith.addi %%out_base, %%c : index\n"
                 "          memref.store %%f0, %%work[%%oc] : memref<?xf32>\n"
                 "        }\n"
                 "        %%a_row = arith.muli %%a, %%factor : index\n"
                 "        scf.for %%b = %%c0 to %%factor step %%c1 {\n"
                 "          %%tab_index = arith.addi %%a_row, %%b : index\n"
                 "          %%sign = memref.load %%table[%%tab_index] : memref<%dxf32>\n"
                 "          %%positive = arith.cmpf ogt, %%sign, %%f0 : f32\n"
                 "          %%in_base = arith.muli %%b, %%m : index\n"
                 "          scf.if %%mix_wide {\n"
                 "            scf.for %%c = %%c0 to %%m step %%c16 {\n"
                 "              %%oc = arith.addi %%out_base, %%c : index\n"
                 "              %%ic = arith.addi %%in_base, %%c : index\n"
                 "              %%ov = vector.load %%work[%%oc] : memref<?xf32>, vector<16xf32>\n"
                 "              %%iv = vector.load %%work[%%ic] : memref<?xf32>, vector<16xf32>\n"
                 "              %%plus = arith.addf %%ov, %%iv : vector<16xf32>\n"
                 "              %%minus = arith.subf %%ov, %%iv : vector<16xf32>\n"
                 "              %%mixed = arith.select %%positive, %%plus, %%minus : vector<16xf32>\n"
                 "              vector.store %%mixed, %%work[%%oc] : memref<?xf32>, vector<16xf32>\n"
                 "            }\n"
                 "          } else {\n"
                 "            scf.for %%c = %%c0 to %%m step %%c1 {\n"
                 "              %%oc = arith.addi %%out_base, %%c : index\n"
                 "              %%ic = arith.addi %%in_base, %%c : index\n"
                 "              %%ov = memref.load %%work[%%oc] : memref<?xf32>\n"
                 "              %%iv = memref.load %%work[%%ic] : memref<?xf32>\n"
                 "              %%plus = arith.addf %%ov, %%iv : f32\n"
                 "              %%minus = arith.subf %%ov, %%iv : f32\n"
                 "              %%mixed = arith.select %%positive, %%plus, %%minus : f32\n"
                 "              memref.store %%mixed, %%work[%%oc] : memref<?xf32>\n"
                 "            }\n"
                 "          }\n"
                 "        }\n"
                 "      }\n",
                 factor, factor * factor, factor * factor);
}

void iq_int4_emit_quantize(iq_text_t *t, const iq_int4_isa_t *isa, int factor) {
  char name[64];
  if (factor == 0)
    snprintf(name, sizeof name, "iqk_%s_quantize", isa->name);
  else
    snprintf(name, sizeof name, "iqk_%s_quantize_h%d", isa->name, factor);
  iq_text_printf(t,
                 "  func.func @%s(%%x: memref<?xf32>, %%codes: memref<?xi8>, "
                 "%%a_zero: memref<?xi32>, %%a_sum: memref<?xi32>, %%a_scale: memref<?xf32>, "
                 "%%work: memref<?xf32>, %%k: index, %%blocks: index, %%panel_rows: index, "
                 "%%row_begin: index, %%row_end: index, %%log2m: index, %%hscale: f32, %%clip: f32) {\n"
                 "    %%c0 = arith.constant 0 : index\n"
                 "    %%c1 = arith.constant 1 : index\n"
                 "    %%c4 = arith.constant 4 : index\n"
                 "    %%c16 = arith.constant 16 : index\n"
                 "    %%c64 = arith.constant 64 : index\n"
                 "    %%factor = arith.constant %d : index\n"
                 "    %%f0 = arith.constant 0.0 : f32\n"
                 "    %%f1 = arith.constant 1.0 : f32\n"
                 "    %%f_minus1 = arith.constant -1.0 : f32\n"
                 "    %%f15 = arith.constant 15.0 : f32\n"
                 "    %%eps = arith.constant 1.0e-08 : f32\n"
                 "    %%i32_zero = arith.constant 0 : i32\n"
                 "    %%m = arith.divui %%k, %%factor : index\n"
                 "    scf.for %%r = %%row_begin to %%row_end step %%c1 {\n"
                 "      %%x_base = arith.muli %%r, %%k : index\n",
                 name, factor > 0 ? factor : 1);
  const char *source = "x", *offset = "x_base";
  if (factor > 0) {
    iq_text_printf(t,
                   "      scf.for %%i = %%c0 to %%k step %%c1 {\n"
                   "        %%xi = arith.addi %%x_base, %%i : index\n"
                   "        %%xv = memref.load %%x[%%xi] : memref<?xf32>\n"
                   "        memref.store %%xv, %%work[%%i] : memref<?xf32>\n"
                   "      }\n");
    emit_fwht(t);
    source = "work";
    offset = "c0";
    if (factor > 1) {
      emit_mix(t, factor);
      offset = "k";
    }
  }
  /* The range: 16 lanes of running max and min (exact in any order),
   * reduced, then the columns past the last multiple of 16. */
  iq_text_printf(t,
                 "      %%first = memref.load %%%s[%%%s] : memref<?xf32>\n"
                 "      %%first16 = vector.broadcast %%first : f32 to vector<16xf32>\n"
                 "      %%k_tail = arith.remui %%k, %%c16 : index\n"
                 "      %%k16 = arith.subi %%k, %%k_tail : index\n"
                 "      %%lanes:2 = scf.for %%i = %%c0 to %%k16 step %%c16 "
                 "iter_args(%%high16 = %%first16, %%low16 = %%first16) -> (vector<16xf32>, "
                 "vector<16xf32>) {\n"
                 "        %%si = arith.addi %%%s, %%i : index\n"
                 "        %%v16 = vector.load %%%s[%%si] : memref<?xf32>, vector<16xf32>\n"
                 "        %%high16_next = arith.maxnumf %%high16, %%v16 : vector<16xf32>\n"
                 "        %%low16_next = arith.minnumf %%low16, %%v16 : vector<16xf32>\n"
                 "        scf.yield %%high16_next, %%low16_next : vector<16xf32>, vector<16xf32>\n"
                 "      }\n"
                 "      %%high_lanes = vector.reduction <maxnumf>, %%lanes#0 : vector<16xf32> into f32\n"
                 "      %%low_lanes = vector.reduction <minnumf>, %%lanes#1 : vector<16xf32> into f32\n"
                 "      %%range:2 = scf.for %%i = %%k16 to %%k step %%c1 "
                 "iter_args(%%high = %%high_lanes, %%low = %%low_lanes) -> (f32, f32) {\n"
                 "        %%si = arith.addi %%%s, %%i : index\n"
                 "        %%v = memref.load %%%s[%%si] : memref<?xf32>\n"
                 "        %%high_next = arith.maxnumf %%high, %%v : f32\n"
                 "        %%low_next = arith.minnumf %%low, %%v : f32\n"
                 "        scf.yield %%high_next, %%low_next : f32, f32\n"
                 "      }\n",
                 source, offset, offset, source, offset, source);
  iq_text_printf(t,
                 "      %%high_unclipped = arith.maxnumf %%range#0, %%f0 : f32\n"
                 "      %%low_unclipped = arith.minnumf %%range#1, %%f0 : f32\n"
                 "      %%high0 = arith.mulf %%high_unclipped, %%clip : f32\n"
                 "      %%low0 = arith.mulf %%low_unclipped, %%clip : f32\n"
                 "      %%high_zero = arith.cmpf oeq, %%high0, %%f0 : f32\n"
                 "      %%low_zero = arith.cmpf oeq, %%low0, %%f0 : f32\n"
                 "      %%both_zero = arith.andi %%high_zero, %%low_zero : i1\n"
                 "      %%high1 = arith.select %%both_zero, %%f1, %%high0 : f32\n"
                 "      %%low1 = arith.select %%both_zero, %%f_minus1, %%low0 : f32\n"
                 "      %%span = arith.subf %%high1, %%low1 : f32\n"
                 "      %%step0 = arith.divf %%span, %%f15 : f32\n"
                 "      %%step = arith.maxnumf %%step0, %%eps : f32\n"
                 "      %%neg_low = arith.negf %%low1 : f32\n"
                 "      %%zero_raw = arith.divf %%neg_low, %%step : f32\n"
                 "      %%zero = math.roundeven %%zero_raw : f32\n"
                 "      %%panel = arith.divui %%r, %%panel_rows : index\n"
                 "      %%lane = arith.remui %%r, %%panel_rows : index\n"
                 "      %%panel_blocks = arith.muli %%panel, %%blocks : index\n"
                 /* Block by block, so the codes of a block are stored
                  * contiguously. */
                 "      %%sum = scf.for %%b = %%c0 to %%blocks step %%c1 "
                 "iter_args(%%block_acc = %%i32_zero) -> (i32) {\n"
                 "        %%pb = arith.addi %%panel_blocks, %%b : index\n"
                 "        %%pb_rows = arith.muli %%pb, %%panel_rows : index\n"
                 "        %%row_slot = arith.addi %%pb_rows, %%lane : index\n"
                 "        %%row_start = arith.muli %%row_slot, %%c64 : index\n"
                 "        %%b_first = arith.muli %%b, %%c64 : index\n"
                 "        %%b_left = arith.subi %%k, %%b_first : index\n"
                 "        %%b_count = arith.minui %%b_left, %%c64 : index\n"
                 "        %%src_base = arith.addi %%%s, %%b_first : index\n"
                 "        %%block_sum = scf.for %%j = %%c0 to %%b_count step %%c1 "
                 "iter_args(%%acc = %%block_acc) -> (i32) {\n"
                 "          %%si = arith.addi %%src_base, %%j : index\n"
                 "          %%v = memref.load %%%s[%%si] : memref<?xf32>\n"
                 "          %%q0 = arith.divf %%v, %%step : f32\n"
                 "          %%q1 = math.roundeven %%q0 : f32\n"
                 "          %%q2 = arith.addf %%q1, %%zero : f32\n"
                 "          %%q3 = arith.maxnumf %%q2, %%f0 : f32\n"
                 "          %%q4 = arith.minnumf %%q3, %%f15 : f32\n"
                 "          %%code = arith.fptoui %%q4 : f32 to i8\n"
                 "          %%code32 = arith.extui %%code : i8 to i32\n"
                 "          %%code_index = arith.addi %%row_start, %%j : index\n"
                 "          memref.store %%code, %%codes[%%code_index] : memref<?xi8>\n"
                 "          %%acc_next = arith.addi %%acc, %%code32 : i32\n"
                 "          scf.yield %%acc_next : i32\n"
                 "        }\n"
                 "        scf.yield %%block_sum : i32\n"
                 "      }\n"
                 "      %%zero_i32 = arith.fptosi %%zero : f32 to i32\n"
                 "      memref.store %%zero_i32, %%a_zero[%%r] : memref<?xi32>\n"
                 "      memref.store %%sum, %%a_sum[%%r] : memref<?xi32>\n"
                 "      memref.store %%step, %%a_scale[%%r] : memref<?xf32>\n"
                 "    }\n"
                 "    return\n"
                 "  }\n",
                 offset, source);
}
