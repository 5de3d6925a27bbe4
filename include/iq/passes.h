/* iq's pass registry. MLIR 19's C API cannot register an external pass by
 * name, so iq keeps its own table of passes with typed options and builds
 * pass managers from pipelines that mix iq passes with upstream ones. */
#ifndef IQ_PASSES_H
#define IQ_PASSES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"

#include "iq/quant.h"
#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum iq_option_type {
  IQ_OPTION_BOOL,
  IQ_OPTION_INT,
  IQ_OPTION_FLOAT,
  IQ_OPTION_STRING,
  IQ_OPTION_ENUM,
} iq_option_type_t;

/* Declaration of one pass option. */
typedef struct iq_pass_option_info {
  const char *name;          /* as written in pipelines: max-iterations */
  iq_option_type_t type;
  const char *default_value; /* in the pipeline syntax: "10", "true" */
  const char *description;   /* one line, with the unit where there is one */
  const char *const *choices; /* NULL-terminated, for IQ_OPTION_ENUM */
  double min, max;           /* inclusive range for INT and FLOAT; unchecked when min > max */
} iq_pass_option_info_t;

#define IQ_MAX_PASS_OPTIONS 16

typedef struct iq_option_value {
  bool b;
  long long i;
  double f;
  char *s; /* STRING and ENUM values; owned by the options object */
} iq_option_value_t;

typedef struct iq_pass_info iq_pass_info_t;

/* Option values for one instance of a pass, indexed like the pass's
 * option declarations. */
typedef struct iq_pass_options {
  const iq_pass_info_t *pass;
  iq_option_value_t values[IQ_MAX_PASS_OPTIONS];
} iq_pass_options_t;

/* A pass: its name in pipelines (also its iq-opt flag), a one-line
 * description, its options, and the function that runs it on one op. The
 * function reports problems as diagnostics on the IR and returns false to
 * fail the pass. */
struct iq_pass_info {
  const char *name;
  const char *description;
  const iq_pass_option_info_t *options;
  size_t num_options;
  bool (*run)(MlirOperation op, const iq_pass_options_t *options);
};

/* ---- Registry ----------------------------------------------------------- */

/* Returns the registered passes, sorted by name, and their count. */
const iq_pass_info_t *const *iq_passes_list(size_t *count);

/* Returns the pass named `name` (of `length` bytes), or NULL. */
const iq_pass_info_t *iq_pass_lookup(const char *name, size_t length);

/* Writes the pass list with options, as `iq-opt --help` shows it. */
void iq_passes_print_help(FILE *stream);

/* ---- Options ------------------------------------------------------------ */

/* Parses `text` ("name=value name2=value2", separated by spaces or commas;
 * a bool option alone means true) over the defaults of `pass`. Returns a
 * new options object the caller frees with iq_pass_options_destroy, or
 * NULL with `*error` set naming the pass, the option and the value. */
iq_pass_options_t *iq_pass_options_parse(const iq_pass_info_t *pass, const char *text,
                                         size_t length, iq_error_t **error);
iq_pass_options_t *iq_pass_options_clone(const iq_pass_options_t *options);
void iq_pass_options_destroy(iq_pass_options_t *options);

/* Typed accessors by option name. Asking for an option the pass does not
 * declare, or with the wrong type, is a programming error and aborts. */
bool iq_pass_option_bool(const iq_pass_options_t *options, const char *name);
long long iq_pass_option_int(const iq_pass_options_t *options, const char *name);
double iq_pass_option_float(const iq_pass_options_t *options, const char *name);
const char *iq_pass_option_string(const iq_pass_options_t *options, const char *name);

/* Creates an MLIR pass running `pass` with `options` (the pass takes
 * ownership of `options`). The pass is not anchored on an op name, so it
 * can run at module level or nested under func.func. */
MlirPass iq_pass_create(const iq_pass_info_t *pass, iq_pass_options_t *options);

/* ---- Pipelines ---------------------------------------------------------- */

/* Adds the passes of `pipeline` to `pm`. The text uses MLIR's textual
 * pipeline syntax (`pass{opt=value}`, `op-name(nested, passes)`), may be
 * wrapped in `builtin.module(...)`, and may name iq passes anywhere: runs
 * of upstream passes go to MLIR's parser, iq passes are inserted between
 * them. Returns false and sets `*error` for a syntax error, an unknown
 * pass or an invalid option. */
bool iq_pipeline_add(MlirPassManager pm, const char *pipeline, iq_error_t **error);

/* ---- Passes ------------------------------------------------------------- */

extern const iq_pass_info_t iq_calibrate_pass;
extern const iq_pass_info_t iq_canonicalize_pass;
extern const iq_pass_info_t iq_fuse_norms_pass;
extern const iq_pass_info_t iq_insert_observers_pass;
extern const iq_pass_info_t iq_pack_int4_pass;
extern const iq_pass_info_t iq_psot_pass;
extern const iq_pass_info_t iq_quantize_pass;
extern const iq_pass_info_t iq_raise_llama_pass;
extern const iq_pass_info_t iq_rotate_pass;
extern const iq_pass_info_t iq_verify_pass;

/* Learns the PSOT rotations of every layer (iq_psot_layer with `options`)
 * from the X, P, V and M rows of the statistics file, which must keep
 * every row of every window, and writes them to `output_path` as the
 * rotations store of iq-rotate method=infoquant: float32 tensors
 * layers.{i}.q1.{j}, layers.{i}.q4.{j} and layers.{i}.q2.{g}. `module`
 * supplies the model's sizes (iq.config). Progress goes to stderr. */
bool iq_psot_write_rotations(MlirOperation module, const char *statistics_path,
                             const char *output_path, const iq_psot_options_t *options,
                             iq_error_t **error);

/* The folder a module's relative `iq.weight_store` path is resolved
 * against: the folder of the .mlir file being processed, or of the output
 * when a model was just imported. Defaults to ".". The string is copied. */
void iq_weight_store_set_base_dir(const char *dir);
const char *iq_weight_store_base_dir(void);

#ifdef __cplusplus
}
#endif

#endif /* IQ_PASSES_H */
