/* iq-verify: the semantic verifier of iq ops as a pass, for pipelines that
 * want the check at a chosen point. */
#include "iq/ir.h"
#include "iq/passes.h"

static bool run_verify(MlirOperation root, const iq_pass_options_t *options) {
  (void)options;
  return iq_verify(root);
}

const iq_pass_info_t iq_verify_pass = {
    .name = "iq-verify",
    .description = "Check iq ops for element types, shapes and attribute values IRDL cannot check",
    .options = NULL,
    .num_options = 0,
    .run = run_verify,
};
