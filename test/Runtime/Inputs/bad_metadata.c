/* Metadata variants the runtime must reject, selected with -DVARIANT=N,
 * and a main that opens the model and prints the error. */
#include <stdio.h>

#include "iq/iq_compiled.h"
#include "iq/iq_runtime.h"

#if defined(__aarch64__)
#define TARGET "aarch64-linux-gnu"
#else
#define TARGET "x86_64-linux-gnu"
#endif
#define HEADER "target " TARGET "\nquantization none\n"
#define CONFIG "config 2 8 1 1 8 16 512 10000 1e-05\n"
#define WEIGHTS "weight 0 embed f32 0 2 512 8\nweight 1 output f32 1 2 512 8\nweight 2 norm f32 0 1 8\n"

#if VARIANT == 1
const char iq_model_metadata[] = "iq-model 2\n" HEADER CONFIG "cache f32\n" WEIGHTS "end\n";
#elif VARIANT == 2
const char iq_model_metadata[] = "iq-model 1\n" HEADER "config 2 8 3 2 8 16 512 10000 1e-05\n"
                                 "cache f32\n" WEIGHTS "end\n";
#elif VARIANT == 3
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f32\n" WEIGHTS;
#elif VARIANT == 4
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f32\n"
                                 "weight 0 embed f32 0 2 512 8\nweight 2 norm f32 0 1 8\nend\n";
#elif VARIANT == 5
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f32\n"
                                 "weight 0 embed q7 0 2 512 8\nend\n";
#elif VARIANT == 6
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f32\n"
                                 "weight 0 norm f32 1 1 8\nend\n";
#elif VARIANT == 7
const char iq_model_metadata[] = "iq-model 1\n" HEADER "config 2 8 1 1 8 16 -512 10000 1e-05\n"
                                 "cache f32\n" WEIGHTS "end\n";
#elif VARIANT == 8
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f16\n" WEIGHTS "end\n";
#elif VARIANT == 9
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG WEIGHTS "end\n";
#elif VARIANT == 10
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache f32\n" WEIGHTS
                                 "end\nweight 3 extra f32 0 1 8\n";
#elif VARIANT == 11
const char iq_model_metadata[] = "iq-model 1\n" HEADER CONFIG "cache int4\n" WEIGHTS "end\n";
#else
#error "pass -DVARIANT=1..11"
#endif

void iq_model_forward(uint64_t *slots) { (void)slots; }

int main(int argc, char **argv) {
  iq_model_t *model = NULL;
  iq_status_t status = iq_model_open(argc > 1 ? argv[1] : "model.iqw", NULL, &model);
  printf("variant %d: %s: %s\n", VARIANT, iq_status_name(status), iq_last_error());
  iq_model_close(model);
  return status == IQ_ERROR_FORMAT ? 0 : 1;
}
