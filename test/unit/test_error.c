/* Tests of iq_error_*: creation, formatting with and without the optional
 * parts, and the first-error-wins rule of iq_error_set. */
#include "iq/support.h"
#include "iq_test.h"

#include <stdlib.h>

IQ_TEST(error_create_copies_all_parts) {
  char file[] = "model.onnx";
  iq_error_t *error =
      iq_error_create(file, "Conv_3", "re-export the model", "rank %d", 7);
  IQ_ASSERT_NOT_NULL(error);
  /* The error keeps its own copies, not the caller's buffers. */
  file[0] = 'X';
  IQ_ASSERT_EQ_STR(error->file, "model.onnx");
  IQ_ASSERT_EQ_STR(error->where, "Conv_3");
  IQ_ASSERT_EQ_STR(error->hint, "re-export the model");
  IQ_ASSERT_EQ_STR(error->message, "rank 7");
  iq_error_destroy(error);
}

IQ_TEST(error_format_with_all_parts) {
  iq_error_t *error = iq_error_create("model.onnx", "Conv_3",
                                      "use a rank-4 input", "input rank is %d",
                                      3);
  IQ_ASSERT_NOT_NULL(error);
  char *text = iq_error_format(error);
  IQ_ASSERT_EQ_STR(text,
                   "model.onnx: Conv_3: input rank is 3\n  hint: use a rank-4 input");
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_format_message_only) {
  iq_error_t *error = iq_error_create(NULL, NULL, NULL, "%s", "plain");
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_NULL(error->file);
  IQ_ASSERT_NULL(error->where);
  IQ_ASSERT_NULL(error->hint);
  char *text = iq_error_format(error);
  IQ_ASSERT_EQ_STR(text, "plain");
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_format_file_without_where) {
  iq_error_t *error = iq_error_create("in.mlir", NULL, "fix the syntax",
                                      "unexpected token '%c'", '}');
  IQ_ASSERT_NOT_NULL(error);
  char *text = iq_error_format(error);
  IQ_ASSERT_EQ_STR(text, "in.mlir: unexpected token '}'\n  hint: fix the syntax");
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_format_where_without_file) {
  iq_error_t *error = iq_error_create(NULL, "--tile-size", NULL,
                                      "value %d is not positive", -4);
  IQ_ASSERT_NOT_NULL(error);
  char *text = iq_error_format(error);
  IQ_ASSERT_EQ_STR(text, "--tile-size: value -4 is not positive");
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_format_long_message) {
  /* Longer than any fixed buffer an implementation might start with. */
  char long_value[5000];
  memset(long_value, 'v', sizeof(long_value) - 1);
  long_value[sizeof(long_value) - 1] = '\0';
  iq_error_t *error = iq_error_create("f", NULL, NULL, "[%s]", long_value);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_UINT(strlen(error->message), sizeof(long_value) + 1);
  char *text = iq_error_format(error);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_UINT(strlen(text), strlen("f: ") + sizeof(long_value) + 1);
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_format_null_error) {
  char *text = iq_error_format(NULL);
  IQ_ASSERT_CONTAINS(text, "out of memory");
  free(text);
}

IQ_TEST(error_set_first_error_wins) {
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_error_set(&error, "a.onnx", NULL, NULL, "first %d", 1));
  IQ_ASSERT_NOT_NULL(error);
  iq_error_t *first = error;
  IQ_ASSERT_FALSE(iq_error_set(&error, "b.onnx", NULL, NULL, "second %d", 2));
  IQ_ASSERT(error == first);
  IQ_ASSERT_EQ_STR(error->file, "a.onnx");
  IQ_ASSERT_EQ_STR(error->message, "first 1");
  iq_error_destroy(error);
}

IQ_TEST(error_set_null_slot_discards) {
  /* Must neither crash nor leak. The sanitizer build checks the leak. */
  IQ_ASSERT_FALSE(iq_error_set(NULL, "a.onnx", "node", "hint", "lost %s", "x"));
}

IQ_TEST(error_print_adds_program_prefix) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_error_t *error =
      iq_error_create("m.onnx", "Gemm_0", "check the shapes", "bad dim %d", 0);
  IQ_ASSERT_NOT_NULL(error);
  iq_error_print(error, "iq-opt", stream);
  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_EQ_STR(text,
                   "iq-opt: error: m.onnx: Gemm_0: bad dim 0\n  hint: check the shapes\n");
  free(text);
  iq_error_destroy(error);
}

IQ_TEST(error_destroy_accepts_null) {
  iq_error_destroy(NULL);
  IQ_ASSERT(true);
}
