/* The linear of a block-diagonal matrix stored in float16, as MLIR
 * source: InfoQuant's residual converters (iq-rotate converters=f16),
 * which run on the kernel runtime's threads next to the int4 kernels.
 *
 * iqk_<isa>_linear_f16(w, x, y, n, d, m, row_begin, row_end): the matrix
 * is n / d diagonal blocks of [d, d], block j at w[j * d * d], row-major.
 * For each row r in [row_begin, row_end) and token t in [0, m),
 *   y[t * n + r] = sum over a of w[r * d + a] * x[t * n + (r / d) * d + a].
 * The products of 16 consecutive a are added lane by lane, the 16 lanes
 * are then summed in order, and the a past the last multiple of 16 are
 * added after them one by one. Without fast-math flags these are the same
 * float operations on every instruction set, so every set gives the same
 * bits. */
#include "Int4KernelsInternal.h"

void iq_int4_emit_linear_f16(iq_text_t *t, const iq_int4_isa_t *isa) {
  iq_text_printf(
      t,
      "  func.func @iqk_%s_linear_f16(%%w: memref<?xf16>, %%x: memref<?xf32>, "
      "%%y: memref<?xf32>, %%n: index, %%d: index, %%m: index, %%row_begin: index, "
      "%%row_end: index) {\n"
      "    %%c0 = arith.constant 0 : index\n"
      "    %%c1 = arith.constant 1 : index\n"
      "    %%c16 = arith.constant 16 : index\n"
      "    %%f0 = arith.constant 0.0 : f32\n"
      "    %%zero16 = arith.constant dense<0.0> : vector<16xf32>\n"
      "    %%d_tail = arith.remui %%d, %%c16 : index\n"
      "    %%d16 = arith.subi %%d, %%d_tail : index\n"
      "    scf.for %%r = %%row_begin to %%row_end step %%c1 {\n"
      "      %%block = arith.divui %%r, %%d : index\n"
      "      %%x_offset = arith.muli %%block, %%d : index\n"
      "      %%w_base = arith.muli %%r, %%d : index\n"
      "      scf.for %%t = %%c0 to %%m step %%c1 {\n"
      "        %%t_row = arith.muli %%t, %%n : index\n"
      "        %%x_base = arith.addi %%t_row, %%x_offset : index\n"
      "        %%lanes = scf.for %%a = %%c0 to %%d16 step %%c16 iter_args(%%acc = %%zero16) "
      "-> (vector<16xf32>) {\n"
      "          %%wi = arith.addi %%w_base, %%a : index\n"
      "          %%xi = arith.addi %%x_base, %%a : index\n"
      "          %%wh = vector.load %%w[%%wi] : memref<?xf16>, vector<16xf16>\n"
      "          %%wf = arith.extf %%wh : vector<16xf16> to vector<16xf32>\n"
      "          %%xv = vector.load %%x[%%xi] : memref<?xf32>, vector<16xf32>\n"
      "          %%p = arith.mulf %%wf, %%xv : vector<16xf32>\n"
      "          %%next = arith.addf %%acc, %%p : vector<16xf32>\n"
      "          scf.yield %%next : vector<16xf32>\n"
      "        }\n"
      "        %%sum16 = vector.reduction <add>, %%lanes : vector<16xf32> into f32\n"
      "        %%sum = scf.for %%a = %%d16 to %%d step %%c1 iter_args(%%acc = %%sum16) -> (f32) {\n"
      "          %%wi = arith.addi %%w_base, %%a : index\n"
      "          %%xi = arith.addi %%x_base, %%a : index\n"
      "          %%wh = memref.load %%w[%%wi] : memref<?xf16>\n"
      "          %%wf = arith.extf %%wh : f16 to f32\n"
      "          %%xv = memref.load %%x[%%xi] : memref<?xf32>\n"
      "          %%p = arith.mulf %%wf, %%xv : f32\n"
      "          %%next = arith.addf %%acc, %%p : f32\n"
      "          scf.yield %%next : f32\n"
      "        }\n"
      "        %%yi = arith.addi %%t_row, %%r : index\n"
      "        memref.store %%sum, %%y[%%yi] : memref<?xf32>\n"
      "      }\n"
      "    }\n"
      "    return\n"
      "  }\n",
      isa->name);
}
