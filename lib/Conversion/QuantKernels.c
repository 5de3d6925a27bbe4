/* Kernels of the quantized float path as MLIR source. The quantizer
 * arithmetic avoids fastmath flags, so LLVM neither reassociates nor
 * contracts it and every value matches lib/Quant bit for bit. */
#include "QuantKernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/quant.h"

static const char *kernel_prologue =
    "    %c0 = arith.constant 0 : index\n"
    "    %c1 = arith.constant 1 : index\n"
    "    %zero = arith.constant 0.0 : f32\n";

bool iq_kernel_hadamard(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t size,
                        bool transposed, char *name, iq_error_t **error) {
  size_t k;
  if (!iq_hadamard_factor((size_t)size, &k, error))
    return false;
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_hadamard_%lld_%lld%s", (long long)width,
           (long long)size, transposed ? "_t" : "");
  if (!iq_kernel_claim(set, name, text))
    return true;
  int64_t m = size / (int64_t)k;
  char row_type[64];
  snprintf(row_type, sizeof row_type, "memref<1x?x%lldxf32>", (long long)width);

  /* The K x K table: the normalized matrix of order K times sqrt(K),
   * which is the +-1 table itself; its transpose for `transposed`. */
  if (k > 1) {
    double *matrix = malloc(k * k * sizeof *matrix);
    if (!matrix)
      return iq_error_set(error, NULL, NULL, NULL, "out of memory");
    if (!iq_hadamard_matrix(k, matrix, error)) {
      free(matrix);
      return false;
    }
    iq_text_printf(text, "  memref.global \"private\" constant @%s_table : memref<%zux%zuxf32> = dense<[",
                   name, k, k);
    for (size_t a = 0; a < k; ++a) {
      iq_text_printf(text, "%s[", a ? ", " : "");
      for (size_t b = 0; b < k; ++b) {
        double entry = transposed ? matrix[b * k + a] : matrix[a * k + b];
        iq_text_printf(text, "%s%s", b ? ", " : "", entry * sqrt((double)k) > 0 ? "1.0" : "-1.0");
      }
      iq_text_printf(text, "]");
    }
    iq_text_printf(text, "]>\n");
    free(matrix);
  }

  iq_text_printf(text,
                 "  func.func private @%s(%%x: %s, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
                 "    %%width = arith.constant %lld : index\n"
                 "    %%size = arith.constant %lld : index\n"
                 "    %%c%lld_m = arith.constant %lld : index\n"
                 "    %%c%zu_k = arith.constant %zu : index\n"
                 "    %%scale = arith.constant %.9e : f32\n",
                 name, row_type, row_type, kernel_prologue, (long long)width, (long long)size,
                 (long long)m, (long long)m, k, k, (double)(float)(1.0 / sqrt((double)size)));
  for (int64_t h = 1; h < m; h *= 2)
    iq_text_printf(text,
                   "    %%c%lld_h = arith.constant %lld : index\n"
                   "    %%c%lld_2h = arith.constant %lld : index\n",
                   (long long)h, (long long)h, (long long)h, (long long)(2 * h));
  if (k > 1)
    iq_text_printf(text,
                   "    %%table = memref.get_global @%s_table : memref<%zux%zuxf32>\n"
                   "    %%column = memref.alloca() : memref<%zuxf32>\n",
                   name, k, k, k);
  iq_text_printf(text,
                 "    %%tokens = memref.dim %%x, %%c1 : %s\n"
                 "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
                 "      scf.for %%h = %%c0 to %%width step %%c1 {\n"
                 "        %%v = memref.load %%x[%%c0, %%t, %%h] : %s\n"
                 "        memref.store %%v, %%y[%%c0, %%t, %%h] : %s\n"
                 "      }\n"
                 "      scf.for %%block = %%c0 to %%width step %%size {\n",
                 row_type, row_type, row_type);
  /* Butterflies of the unnormalized transform along each row of the
   * [K, 2^m] view, one loop nest per stage. */
  for (int64_t h = 1; h < m; h *= 2) {
    iq_text_printf(text,
                   "        scf.for %%a = %%c0 to %%size step %%c%lld_m {\n"
                   "          %%row = arith.addi %%block, %%a : index\n"
                   "          scf.for %%i = %%c0 to %%c%lld_m step %%c%lld_2h {\n"
                   "            scf.for %%j0 = %%c0 to %%c%lld_h step %%c1 {\n"
                   "              %%j = arith.addi %%i, %%j0 : index\n"
                   "              %%p = arith.addi %%row, %%j : index\n"
                   "              %%q = arith.addi %%p, %%c%lld_h : index\n"
                   "              %%u = memref.load %%y[%%c0, %%t, %%p] : %s\n"
                   "              %%w = memref.load %%y[%%c0, %%t, %%q] : %s\n"
                   "              %%sum = arith.addf %%u, %%w : f32\n"
                   "              %%difference = arith.subf %%u, %%w : f32\n"
                   "              memref.store %%sum, %%y[%%c0, %%t, %%p] : %s\n"
                   "              memref.store %%difference, %%y[%%c0, %%t, %%q] : %s\n"
                   "            }\n          }\n        }\n",
                   (long long)m, (long long)m, (long long)h, (long long)h, (long long)h, row_type,
                   row_type, row_type, row_type);
  }
  iq_text_printf(text,
                 "        scf.for %%e = %%c0 to %%size step %%c1 {\n"
                 "          %%index = arith.addi %%block, %%e : index\n"
                 "          %%v = memref.load %%y[%%c0, %%t, %%index] : %s\n"
                 "          %%scaled = arith.mulf %%v, %%scale : f32\n"
                 "          memref.store %%scaled, %%y[%%c0, %%t, %%index] : %s\n"
                 "        }\n",
                 row_type, row_type);
  if (k > 1) {
    /* out[a, b] = sum_a' table[a, a'] * in[a', b], one column b at a time. */
    iq_text_printf(text,
                   "        scf.for %%b = %%c0 to %%c%lld_m step %%c1 {\n"
                   "          scf.for %%a = %%c0 to %%c%zu_k step %%c1 {\n"
                   "            %%offset = arith.muli %%a, %%c%lld_m : index\n"
                   "            %%row = arith.addi %%block, %%offset : index\n"
                   "            %%index = arith.addi %%row, %%b : index\n"
                   "            %%v = memref.load %%y[%%c0, %%t, %%index] : %s\n"
                   "            memref.store %%v, %%column[%%a] : memref<%zuxf32>\n"
                   "          }\n"
                   "          scf.for %%a = %%c0 to %%c%zu_k step %%c1 {\n"
                   "            %%mixed = scf.for %%a2 = %%c0 to %%c%zu_k step %%c1 iter_args(%%acc = %%zero) -> (f32) {\n"
                   "              %%sign = memref.load %%table[%%a, %%a2] : memref<%zux%zuxf32>\n"
                   "              %%v = memref.load %%column[%%a2] : memref<%zuxf32>\n"
                   "              %%product = arith.mulf %%sign, %%v : f32\n"
                   "              %%next = arith.addf %%acc, %%product : f32\n"
                   "              scf.yield %%next : f32\n"
                   "            }\n"
                   "            %%offset = arith.muli %%a, %%c%lld_m : index\n"
                   "            %%row = arith.addi %%block, %%offset : index\n"
                   "            %%index = arith.addi %%row, %%b : index\n"
                   "            memref.store %%mixed, %%y[%%c0, %%t, %%index] : %s\n"
                   "          }\n"
                   "        }\n",
                   (long long)m, k, (long long)m, row_type, k, k, k, k, k, k, (long long)m,
                   row_type);
  }
  iq_text_printf(text, "      }\n    }\n    return\n  }\n");
  return true;
}

void iq_kernel_fake_quant(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t group,
                          int bits, double clip, bool include_zero, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_fake_quant_%lld_g%lld_b%d_c%08x%s", (long long)width,
           (long long)group, bits, (unsigned)((float)clip * 1e7f), include_zero ? "_z" : "");
  if (!iq_kernel_claim(set, name, text))
    return;
  char row_type[64];
  snprintf(row_type, sizeof row_type, "memref<1x?x%lldxf32>", (long long)width);
  int maxq = (1 << bits) - 1;
  /* Range: max and min of the group (with 0 when include_zero), times the
   * clip factor; both 0 gives -1 and +1. Then s = max(range / maxq, eps),
   * z = round_half_even(-xmin / s), code = clamp(round_half_even(x / s) +
   * z, 0, maxq) and y = s * (code - z), as iq_quantize_value computes. */
  iq_text_printf(
      text,
      "  func.func private @%s(%%x: %s, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
      "    %%width = arith.constant %lld : index\n"
      "    %%group = arith.constant %lld : index\n"
      "    %%clip = arith.constant %.9e : f32\n"
      "    %%maxq = arith.constant %d.0 : f32\n"
      "    %%eps = arith.constant %s : f32\n"
      "    %%one = arith.constant 1.0 : f32\n"
      "    %%minus_one = arith.constant -1.0 : f32\n"
      "    %%tokens = memref.dim %%x, %%c1 : %s\n"
      "    scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "      scf.for %%first = %%c0 to %%width step %%group {\n"
      "        %%x0 = memref.load %%x[%%c0, %%t, %%first] : %s\n"
      "        %%start = arith.addi %%first, %%c1 : index\n"
      "        %%last = arith.addi %%first, %%group : index\n"
      "        %%high, %%low = scf.for %%h = %%start to %%last step %%c1 iter_args(%%hi = %%x0, %%lo = %%x0) -> (f32, f32) {\n"
      "          %%v = memref.load %%x[%%c0, %%t, %%h] : %s\n"
      "          %%hi2 = arith.maximumf %%hi, %%v : f32\n"
      "          %%lo2 = arith.minimumf %%lo, %%v : f32\n"
      "          scf.yield %%hi2, %%lo2 : f32, f32\n"
      "        }\n",
      name, row_type, row_type, kernel_prologue, (long long)width, (long long)group,
      (double)(float)clip, maxq, include_zero ? "1.0e-8" : "1.0e-6", row_type, row_type,
      row_type);
  if (include_zero)
    iq_text_printf(text, "        %%high0 = arith.maximumf %%high, %%zero : f32\n"
                         "        %%low0 = arith.minimumf %%low, %%zero : f32\n");
  else
    iq_text_printf(text, "        %%high0 = arith.addf %%high, %%zero : f32\n"
                         "        %%low0 = arith.addf %%low, %%zero : f32\n");
  iq_text_printf(
      text,
      "        %%high1 = arith.mulf %%high0, %%clip : f32\n"
      "        %%low1 = arith.mulf %%low0, %%clip : f32\n"
      "        %%high_zero = arith.cmpf oeq, %%high1, %%zero : f32\n"
      "        %%low_zero = arith.cmpf oeq, %%low1, %%zero : f32\n"
      "        %%empty = arith.andi %%high_zero, %%low_zero : i1\n"
      "        %%high2 = arith.select %%empty, %%one, %%high1 : f32\n"
      "        %%low2 = arith.select %%empty, %%minus_one, %%low1 : f32\n"
      "        %%range = arith.subf %%high2, %%low2 : f32\n"
      "        %%step = arith.divf %%range, %%maxq : f32\n"
      "        %%s = arith.maximumf %%step, %%eps : f32\n"
      "        %%negative_low = arith.negf %%low2 : f32\n"
      "        %%z_raw = arith.divf %%negative_low, %%s : f32\n"
      "        %%z = math.roundeven %%z_raw : f32\n"
      "        scf.for %%h = %%first to %%last step %%c1 {\n"
      "          %%v = memref.load %%x[%%c0, %%t, %%h] : %s\n"
      "          %%ratio = arith.divf %%v, %%s : f32\n"
      "          %%rounded = math.roundeven %%ratio : f32\n"
      "          %%code_raw = arith.addf %%rounded, %%z : f32\n"
      "          %%code_low = arith.maximumf %%code_raw, %%zero : f32\n"
      "          %%code = arith.minimumf %%code_low, %%maxq : f32\n"
      "          %%centred = arith.subf %%code, %%z : f32\n"
      "          %%dequantized = arith.mulf %%s, %%centred : f32\n"
      "          memref.store %%dequantized, %%y[%%c0, %%t, %%h] : %s\n"
      "        }\n"
      "      }\n    }\n    return\n  }\n",
      row_type, row_type);
}

void iq_kernel_linear_codes(iq_text_t *text, iq_kernel_set_t *set, int64_t in, int64_t out,
                            int bits, char *name) {
  snprintf(name, IQ_KERNEL_NAME_SIZE, "iq_linear_u%d_%lldx%lld", bits, (long long)in,
           (long long)out);
  if (!iq_kernel_claim(set, name, text))
    return;
  char x_type[64], y_type[64], codes_type[64], params_type[64];
  snprintf(x_type, sizeof x_type, "memref<1x?x%lldxf32>", (long long)in);
  snprintf(y_type, sizeof y_type, "memref<1x?x%lldxf32>", (long long)out);
  long long code_bytes = bits == 8 ? (long long)(in * out) : (long long)((in * out + 1) / 2);
  snprintf(codes_type, sizeof codes_type, "memref<%lldxi8>", code_bytes);
  snprintf(params_type, sizeof params_type, "memref<%lldx1xf32>", (long long)out);
  /* 8-bit codes are one per byte. 4-bit codes are two per byte, low
   * nibble first. */
  char extract[640];
  if (bits == 8)
    snprintf(extract, sizeof extract,
             "        %%code_i8 = memref.load %%codes[%%flat] : %s\n", codes_type);
  else
    snprintf(extract, sizeof extract,
             "        %%byte_index = arith.divui %%flat, %%c2 : index\n"
             "        %%nibble = arith.remui %%flat, %%c2 : index\n"
             "        %%byte = memref.load %%codes[%%byte_index] : %s\n"
             "        %%high = arith.shrui %%byte, %%i8_4 : i8\n"
             "        %%low = arith.andi %%byte, %%i8_15 : i8\n"
             "        %%is_high = arith.cmpi ne, %%nibble, %%c0 : index\n"
             "        %%code_i8 = arith.select %%is_high, %%high, %%low : i8\n",
             codes_type);
  /* Each row of W is dequantized once into `row`, as s * (code - z) in
   * float32 (the value iq_quantize_value returns), and then every token's
   * dot product with it runs like the float kernel's. */
  iq_text_printf(
      text,
      "  func.func private @%s(%%x: %s, %%codes: %s, %%scales: %s, %%zeros: %s, %%y: %s) attributes {llvm.linkage = #llvm.linkage<internal>} {\n%s"
      "    %%in = arith.constant %lld : index\n"
      "    %%out = arith.constant %lld : index\n"
      "    %%c2 = arith.constant 2 : index\n"
      "    %%i8_4 = arith.constant 4 : i8\n"
      "    %%i8_15 = arith.constant 15 : i8\n"
      "    %%row = memref.alloca() : memref<%lldxf32>\n"
      "    %%tokens = memref.dim %%x, %%c1 : %s\n"
      "    scf.for %%n = %%c0 to %%out step %%c1 {\n"
      "      %%s = memref.load %%scales[%%n, %%c0] : %s\n"
      "      %%z = memref.load %%zeros[%%n, %%c0] : %s\n"
      "      %%first = arith.muli %%n, %%in : index\n"
      "      scf.for %%k = %%c0 to %%in step %%c1 {\n"
      "        %%flat = arith.addi %%first, %%k : index\n"
      "%s"
      "        %%code = arith.uitofp %%code_i8 : i8 to f32\n"
      "        %%centred = arith.subf %%code, %%z : f32\n"
      "        %%w = arith.mulf %%s, %%centred : f32\n"
      "        memref.store %%w, %%row[%%k] : memref<%lldxf32>\n"
      "      }\n"
      "      scf.for %%t = %%c0 to %%tokens step %%c1 {\n"
      "        %%dot = scf.for %%k = %%c0 to %%in step %%c1 iter_args(%%sum = %%zero) -> (f32) {\n"
      "          %%w = memref.load %%row[%%k] : memref<%lldxf32>\n"
      "          %%xv = memref.load %%x[%%c0, %%t, %%k] : %s\n"
      "          %%p = arith.mulf %%xv, %%w fastmath<fast> : f32\n"
      "          %%next = arith.addf %%sum, %%p fastmath<fast> : f32\n"
      "          scf.yield %%next : f32\n"
      "        }\n"
      "        memref.store %%dot, %%y[%%c0, %%t, %%n] : %s\n"
      "      }\n    }\n    return\n  }\n",
      name, x_type, codes_type, params_type, params_type, y_type, kernel_prologue, (long long)in,
      (long long)out, (long long)in, x_type, params_type, params_type, extract, (long long)in,
      (long long)in, x_type, y_type);
}
