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

/* Emits the in-place butterflies on %work[base .. base + m). */
static void emit_fwht(iq_text_t *t) {
  iq_text_printf(t,
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
                 "      scf.for %%i = %%c0 to %%k step %%c1 {\n"
                 "        %%fv = memref.load %%work[%%i] : memref<?xf32>\n"
                 "        %%fw = arith.mulf %%fv, %%hscale : f32\n"
                 "        memref.store %%fw, %%work[%%i] : memref<?xf32>\n"
                 "      }\n");
}

/* Emits the mix with hadF into %work[k .. 2k). */
static void emit_mix(iq_text_t *t, int factor) {
  iq_text_printf(t,
                 "      %%table = memref.get_global @iqk_hadamard_%d : memref<%dxf32>\n"
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
                 "          scf.for %%c = %%c0 to %%m step %%c1 {\n"
                 "            %%oc = arith.addi %%out_base, %%c : index\n"
                 "            %%ic = arith.addi %%in_base, %%c : index\n"
                 "            %%ov = memref.load %%work[%%oc] : memref<?xf32>\n"
                 "            %%iv = memref.load %%work[%%ic] : memref<?xf32>\n"
                 "            %%plus = arith.addf %%ov, %%iv : f32\n"
                 "            %%minus = arith.subf %%ov, %%iv : f32\n"
                 "            %%mixed = arith.select %%positive, %%plus, %%minus : f32\n"
                 "            memref.store %%mixed, %%work[%%oc] : memref<?xf32>\n"
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
  iq_text_printf(t,
                 "      %%first = memref.load %%%s[%%%s] : memref<?xf32>\n"
                 "      %%range:2 = scf.for %%i = %%c1 to %%k step %%c1 "
                 "iter_args(%%high = %%first, %%low = %%first) -> (f32, f32) {\n"
                 "        %%si = arith.addi %%%s, %%i : index\n"
                 "        %%v = memref.load %%%s[%%si] : memref<?xf32>\n"
                 "        %%high_next = arith.maxnumf %%high, %%v : f32\n"
                 "        %%low_next = arith.minnumf %%low, %%v : f32\n"
                 "        scf.yield %%high_next, %%low_next : f32, f32\n"
                 "      }\n"
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
                 "      %%sum = scf.for %%i = %%c0 to %%k step %%c1 "
                 "iter_args(%%acc = %%i32_zero) -> (i32) {\n"
                 "        %%si = arith.addi %%%s, %%i : index\n"
                 "        %%v = memref.load %%%s[%%si] : memref<?xf32>\n"
                 "        %%q0 = arith.divf %%v, %%step : f32\n"
                 "        %%q1 = math.roundeven %%q0 : f32\n"
                 "        %%q2 = arith.addf %%q1, %%zero : f32\n"
                 "        %%q3 = arith.maxnumf %%q2, %%f0 : f32\n"
                 "        %%q4 = arith.minnumf %%q3, %%f15 : f32\n"
                 "        %%code = arith.fptoui %%q4 : f32 to i8\n"
                 "        %%code32 = arith.extui %%code : i8 to i32\n"
                 "        %%block = arith.divui %%i, %%c64 : index\n"
                 "        %%j = arith.remui %%i, %%c64 : index\n"
                 "        %%pb = arith.addi %%panel_blocks, %%block : index\n"
                 "        %%pb_rows = arith.muli %%pb, %%panel_rows : index\n"
                 "        %%row_slot = arith.addi %%pb_rows, %%lane : index\n"
                 "        %%row_start = arith.muli %%row_slot, %%c64 : index\n"
                 "        %%code_index = arith.addi %%row_start, %%j : index\n"
                 "        memref.store %%code, %%codes[%%code_index] : memref<?xi8>\n"
                 "        %%acc_next = arith.addi %%acc, %%code32 : i32\n"
                 "        scf.yield %%acc_next : i32\n"
                 "      }\n"
                 "      %%zero_i32 = arith.fptosi %%zero : f32 to i32\n"
                 "      memref.store %%zero_i32, %%a_zero[%%r] : memref<?xi32>\n"
                 "      memref.store %%sum, %%a_sum[%%r] : memref<?xi32>\n"
                 "      memref.store %%step, %%a_scale[%%r] : memref<?xf32>\n"
                 "    }\n"
                 "    return\n"
                 "  }\n",
                 source, offset, offset, source, offset, source);
}
