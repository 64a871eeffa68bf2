/* The one error table: names, texts and the helpers that fill lmr_error. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

const char *lmr_code_name(int code) {
  switch (code) {
    case LMR_OK:
      return "OK";
#define LMR_XX_NAME(name, value, text) \
  case LMR_##name:                     \
    return #name;
      LMR_ERRNO_MAP(LMR_XX_NAME)
#undef LMR_XX_NAME
    default:
      return "EUNKNOWN";
  }
}

const char *lmr_strerror(int code) {
  switch (code) {
    case LMR_OK:
      return "success";
#define LMR_XX_TEXT(name, value, text) \
  case LMR_##name:                     \
    return text;
      LMR_ERRNO_MAP(LMR_XX_TEXT)
#undef LMR_XX_TEXT
    default:
      return "unknown error";
  }
}

static void vset(lmr_error *err, int code, const char *fmt, va_list ap) {
  err->code = code;
  err->needed = 0;
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

int lmr__err(lmr_error *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
  }
  return code;
}

int lmr__err_sys(lmr_error *err, int code, int saved_errno, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    size_t used = strlen(err->msg);
    char buf[96];
    /* GNU strerror_r may return a static string instead of filling buf. */
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    const char *text = strerror_r(saved_errno, buf, sizeof buf);
#else
    const char *text = strerror_r(saved_errno, buf, sizeof buf) == 0 ? buf : "?";
#endif
    snprintf(err->msg + used, sizeof err->msg - used, ": %s", text);
  }
  return code;
}

int lmr__err_copy(lmr_error *dst, const lmr_error *src) {
  if (dst != NULL && dst != src) *dst = *src;
  return src->code;
}

void lmr__err_clear(lmr_error *err) {
  if (err != NULL) {
    err->code = LMR_OK;
    err->needed = 0;
    err->msg[0] = '\0';
  }
}

int64_t lmr__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lmr__deadline(double seconds) {
  return lmr__now_ns() + (int64_t)(seconds * 1e9);
}
