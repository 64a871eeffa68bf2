/* Tiny test harness after libuv's: a TEST returns 0 on success; a failing
 * ASSERT prints file:line and both values and returns 1. Helpers return int
 * too, so ASSERT_EQ(helper(...), 0) prints the whole chain of file:line. */
#ifndef LMR_TEST_H
#define LMR_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TEST(name) static int test_##name(void)

#define TEST_FAIL_(...)                                                     \
  do {                                                                      \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                       \
    fprintf(stderr, __VA_ARGS__);                                           \
    fputc('\n', stderr);                                                    \
    return 1;                                                               \
  } while (0)

#define ASSERT(cond) do { if (!(cond)) TEST_FAIL_("ASSERT(%s) failed", #cond); } while (0)

/* Integers of any width compare as int64 (unsigned ones wrap, which keeps
 * equality exact) and print in decimal and hex. */
#define ASSERT_CMP_(a, op, b)                                                   \
  do {                                                                          \
    int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                               \
    if (!(a_ op b_))                                                            \
      TEST_FAIL_("%s %s %s failed: %" PRId64 " (0x%" PRIx64 ") vs %" PRId64     \
                 " (0x%" PRIx64 ")", #a, #op, #b, a_, (uint64_t)a_, b_, (uint64_t)b_); \
  } while (0)
#define ASSERT_EQ(a, b) ASSERT_CMP_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP_(a, !=, b)

/* Prints up to 32 bytes of p[at..n), escaped. */
static inline void test_dump_(const char *label, const unsigned char *p, size_t n, size_t at) {
  fprintf(stderr, "    %s[%zu..]: \"", label, at);
  for (size_t i = at; i < n && i < at + 32; i++)
    fprintf(stderr, p[i] >= 32 && p[i] < 127 && p[i] != '"' ? "%c" : "\\x%02x", p[i]);
  fprintf(stderr, "\"\n");
}

#define ASSERT_MEM_EQ(a, b, n)                                                             \
  do {                                                                                     \
    const unsigned char *a_ = (const void *)(a), *b_ = (const void *)(b);                  \
    size_t n_ = (n), i_ = 0;                                                               \
    while (i_ < n_ && a_[i_] == b_[i_]) i_++;                                              \
    if (i_ < n_) {                                                                         \
      fprintf(stderr, "  %s:%d: ASSERT_MEM_EQ(%s, %s, %s) failed at byte %zu\n",           \
              __FILE__, __LINE__, #a, #b, #n, i_);                                         \
      test_dump_(#a, a_, n_, i_);                                                          \
      test_dump_(#b, b_, n_, i_);                                                          \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

typedef struct {
  const char *name;
  int (*fn)(void);
} test_entry_;
#define TEST_ENTRY(name) {#name, test_##name}

/* TEST_MAIN(TEST_ENTRY(a), TEST_ENTRY(b)) runs the tests in order. */
#define TEST_MAIN(...)                                                    \
  int main(void) {                                                        \
    static const test_entry_ tests_[] = {__VA_ARGS__};                    \
    int passed = 0, failed = 0;                                           \
    for (size_t i = 0; i < sizeof tests_ / sizeof tests_[0]; i++) {       \
      int rc = tests_[i].fn();                                            \
      printf("%s %s\n", rc == 0 ? "ok  " : "FAIL", tests_[i].name);       \
      fflush(stdout); /* keep order with the failure text on stderr */    \
      if (rc == 0) passed++; else failed++;                               \
    }                                                                     \
    printf("%d passed, %d failed\n", passed, failed);                     \
    return failed == 0 ? 0 : 1;                                           \
  }

#endif
