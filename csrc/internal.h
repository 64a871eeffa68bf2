/* Private helpers shared by the C core's files. */
#ifndef LMR_INTERNAL_H
#define LMR_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "lmcache_redis.h"

#if defined(__GNUC__)
#define LMR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define LMR_PRINTF(fmt, args)
#endif

/* Sets err (if not NULL) to code and a formatted message; returns code. */
int lmr__err(lmr_error *err, int code, const char *fmt, ...) LMR_PRINTF(3, 4);
/* Same, appending ": <strerror(saved errno)>" for a failed syscall. */
int lmr__err_sys(lmr_error *err, int code, int saved_errno, const char *fmt, ...)
    LMR_PRINTF(4, 5);
/* Copies src into dst (both may be NULL-safe); returns src->code. */
int lmr__err_copy(lmr_error *dst, const lmr_error *src);
void lmr__err_clear(lmr_error *err);

/* Monotonic clock in nanoseconds, and a deadline `seconds` from now. */
int64_t lmr__now_ns(void);
int64_t lmr__deadline(double seconds);

/* The client's counters (lmr_stats), bumped by every connection. */
typedef struct {
  atomic_uint_fast64_t bytes_sent;
  atomic_uint_fast64_t bytes_received;
  atomic_uint_fast64_t bytes_copied;
  atomic_uint_fast64_t commands;
  atomic_uint_fast64_t reconnects;
  atomic_uint_fast64_t redirections;
} lmr__stats;

#define LMR__COUNT(stats, field, n) \
  atomic_fetch_add_explicit(&(stats)->field, (n), memory_order_relaxed)

#endif
