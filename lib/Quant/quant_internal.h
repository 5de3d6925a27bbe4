/* Helpers shared by the lib/Quant sources and not part of the API. */
#ifndef IQ_QUANT_INTERNAL_H
#define IQ_QUANT_INTERNAL_H

#include "iq/quant.h"

/* SplitMix64 (Steele, Lea and Flood, 2014): the one generator behind the
 * random Hadamard signs, the PSOT shuffles and the retraction draws. */
static inline uint64_t iq_splitmix64_next(uint64_t *state) {
  *state += 0x9e3779b97f4a7c15ull;
  uint64_t z = *state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1) from the top 53 bits. */
static inline double iq_splitmix64_uniform(uint64_t *state) {
  return (double)(iq_splitmix64_next(state) >> 11) / 9007199254740992.0;
}

/* Fails, naming `what` and the first position, when `values` ([rows x
 * cols]) contains an infinity or NaN. */
bool iq_quant_check_finite(const float *values, size_t rows, size_t cols,
                           const char *what, iq_error_t **error);

/* iq_cayley_step with `iterations` fixed-point iterations in place of 5. */
bool iq_quant_cayley_step(double *q, const double *grad, size_t n, double lr,
                          bool retract, int iterations, iq_error_t **error);

/* Processes rows [begin, end) of some row-independent job. */
typedef void (*iq_quant_rows_fn)(void *context, size_t begin, size_t end);

/* Worker threads of the offline quantizers: IQ_QUANT_THREADS when set to
 * 1..256, else the online CPUs (at most 64). */
int iq_quant_thread_count(void);

/* Calls fn on contiguous runs of [0, rows), one per thread, with at least
 * min_rows_per_thread rows each, and returns when all are done. */
void iq_quant_parallel_rows(size_t rows, size_t min_rows_per_thread, iq_quant_rows_fn fn,
                            void *context);

#endif /* IQ_QUANT_INTERNAL_H */
