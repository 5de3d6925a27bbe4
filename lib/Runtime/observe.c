/* The calibration hook of iq_compiled.h: compiled code with observers
 * calls iq_runtime_observe, which forwards to the host's observer. */
#include <stddef.h>

#include "iq/iq_compiled.h"

static iq_observer_t installed_observer;
static void *installed_user_data;

void iq_runtime_set_observer(iq_observer_t observer, void *user_data) {
  installed_observer = observer;
  installed_user_data = user_data;
}

void iq_runtime_observe(uint64_t id, const float *data, int64_t rows, int64_t cols) {
  if (installed_observer)
    installed_observer(installed_user_data, id, data, rows, cols);
}
