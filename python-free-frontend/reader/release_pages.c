/* Releasing the resident pages of external tensors after use. */

/* madvise and MADV_DONTNEED are not in POSIX (posix_madvise's DONTNEED is
 * a no-op in glibc), so this file requests the default feature set. */
#define _DEFAULT_SOURCE

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iq/onnx.h"

void iq_onnx_tensor_release_pages(const iq_onnx_tensor_t *tensor) {
  if (!tensor || !tensor->external || !tensor->data || tensor->byte_size == 0)
    return;
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0)
    return;
  /* The mapping starts on a page boundary and covers whole pages, so the
   * rounded range stays inside it. Pages shared with a neighbouring tensor
   * are simply read again if that tensor is used later. */
  uintptr_t start = (uintptr_t)tensor->data & ~(uintptr_t)(page - 1);
  uintptr_t end = ((uintptr_t)tensor->data + tensor->byte_size + (uintptr_t)page - 1) &
                  ~(uintptr_t)(page - 1);
  madvise((void *)start, end - start, MADV_DONTNEED);
}
