/* The RESP command encoder (resp.h): exact bytes, referenced (not copied)
 * big pieces, merged scratch pieces, and the overflow flag. */
#include <stdlib.h>

#include "resp.h"
#include "test.h"

/* Gathers the command's iovecs into buf (as writev would send them). */
static size_t gather(const lmr_cmd *c, char *buf, size_t cap) {
  size_t n = 0;
  for (int i = 0; i < c->iovcnt; i++) {
    if (n + c->iov[i].iov_len > cap) abort();  /* the test's buffer is too small */
    memcpy(buf + n, c->iov[i].iov_base, c->iov[i].iov_len);
    n += c->iov[i].iov_len;
  }
  return n;
}

/* The encoded command equals the expected bytes, and total agrees. */
static int check_bytes(const lmr_cmd *c, const char *want, size_t want_len) {
  static char buf[8192];
  size_t n = gather(c, buf, sizeof buf);
  ASSERT_EQ(c->overflow, 0);
  ASSERT_EQ(c->total, n);
  ASSERT_EQ(n, want_len);
  ASSERT_MEM_EQ(buf, want, n);
  return 0;
}

static int is_scratch(const lmr_cmd *c, const void *p) {
  return (const char *)p >= c->scratch && (const char *)p < c->scratch + LMR_CMD_SCRATCH;
}

/* SET <key>:stripe:3 <header><slice> PX 1000, as the client sends a stripe. */
TEST(set_striped) {
  static lmr_cmd c;
  const char key[] = "user:42", suffix[] = ":stripe:3";
  unsigned char hdr[32], slice[100];
  for (int i = 0; i < 32; i++) hdr[i] = (unsigned char)i;  /* holds \r, \n, NUL */
  for (int i = 0; i < 100; i++) slice[i] = (unsigned char)(255 - i);
  struct iovec key_parts[2] = {{(void *)key, 7}, {(void *)suffix, 9}};
  struct iovec value_parts[2] = {{hdr, 32}, {slice, 100}};

  lmr_cmd_init(&c, 5);
  lmr_cmd_arg_copy(&c, "SET");
  lmr_cmd_arg_parts(&c, key_parts, 2);
  lmr_cmd_arg_parts(&c, value_parts, 2);
  lmr_cmd_arg_copy(&c, "PX");
  lmr_cmd_arg_int(&c, 1000);

  char want[512];
  size_t n = 0;
  n += (size_t)sprintf(want + n, "*5\r\n$3\r\nSET\r\n$16\r\nuser:42:stripe:3\r\n$132\r\n");
  memcpy(want + n, hdr, 32), n += 32;
  memcpy(want + n, slice, 100), n += 100;
  n += (size_t)sprintf(want + n, "\r\n$2\r\nPX\r\n$4\r\n1000\r\n");
  ASSERT_EQ(check_bytes(&c, want, n), 0);

  /* Scratch runs merge, so: [*5 $3 SET $16] key suffix [CRLF $132] hdr slice
   * [CRLF $2 PX $4 1000 CRLF]. Key and value are referenced in place. */
  ASSERT_EQ(c.iovcnt, 7);
  ASSERT(is_scratch(&c, c.iov[0].iov_base));
  ASSERT(c.iov[1].iov_base == key && c.iov[2].iov_base == suffix);
  ASSERT(is_scratch(&c, c.iov[3].iov_base));
  ASSERT(c.iov[4].iov_base == hdr && c.iov[5].iov_base == slice);
  ASSERT(is_scratch(&c, c.iov[6].iov_base));

  /* Re-initialising starts over: the same command encodes the same bytes. */
  lmr_cmd_init(&c, 5);
  lmr_cmd_arg_copy(&c, "SET");
  lmr_cmd_arg_parts(&c, key_parts, 2);
  lmr_cmd_arg_parts(&c, value_parts, 2);
  lmr_cmd_arg_copy(&c, "PX");
  lmr_cmd_arg_int(&c, 1000);
  ASSERT_EQ(check_bytes(&c, want, n), 0);
  ASSERT_EQ(c.iovcnt, 7);
  return 0;
}

/* Commands made only of scratch pieces take a single iovec; an empty
 * argument adds no empty iovec. */
TEST(small_args_merge) {
  static lmr_cmd c;
  lmr_cmd_init(&c, 4);
  lmr_cmd_arg_copy(&c, "GET");
  lmr_cmd_arg(&c, "ignored", 0);
  lmr_cmd_arg_int(&c, INT64_MIN);
  lmr_cmd_arg_int(&c, -1);
  const char want[] = "*4\r\n$3\r\nGET\r\n$0\r\n\r\n$20\r\n-9223372036854775808\r\n$2\r\n-1\r\n";
  ASSERT_EQ(check_bytes(&c, want, sizeof want - 1), 0);
  ASSERT_EQ(c.iovcnt, 1);
  return 0;
}

/* An encoded value is one argument of many pieces: "*2\r\n$1\r\n" (one
 * scratch iovec), the key, "\r\n$n\r\n" (scratch), the pieces, "\r\n":
 * LMR_CMD_MAX_IOV - 4 pieces fit exactly, one more overflows. */
TEST(iov_limit) {
  static lmr_cmd c;
  static char want[4096];
  static struct iovec pieces[LMR_CMD_MAX_IOV];
  const char *v = "v";
  int k = LMR_CMD_MAX_IOV - 4;
  for (int i = 0; i < k + 1; i++) pieces[i] = (struct iovec){(void *)v, 1};
  lmr_cmd_init(&c, 2);
  lmr_cmd_arg(&c, v, 1);
  lmr_cmd_arg_parts(&c, pieces, k);
  size_t n = (size_t)sprintf(want, "*2\r\n$1\r\nv\r\n$%d\r\n", k);
  for (int i = 0; i < k; i++) want[n++] = 'v';
  n += (size_t)sprintf(want + n, "\r\n");
  ASSERT_EQ(c.iovcnt, LMR_CMD_MAX_IOV);
  ASSERT_EQ(check_bytes(&c, want, n), 0);

  lmr_cmd_init(&c, 2);
  lmr_cmd_arg(&c, v, 1);
  lmr_cmd_arg_parts(&c, pieces, k + 1);
  ASSERT_EQ(c.overflow, 1);
  ASSERT(c.iovcnt <= LMR_CMD_MAX_IOV);

  /* One argument of too many pieces. */
  struct iovec many[LMR_CMD_MAX_IOV];
  for (int i = 0; i < LMR_CMD_MAX_IOV; i++) many[i] = (struct iovec){(void *)v, 1};
  lmr_cmd_init(&c, 1);
  lmr_cmd_arg_parts(&c, many, LMR_CMD_MAX_IOV);
  ASSERT_EQ(c.overflow, 1);

  /* init clears the flag. */
  lmr_cmd_init(&c, 1);
  lmr_cmd_arg_copy(&c, "PING");
  ASSERT_EQ(check_bytes(&c, "*1\r\n$4\r\nPING\r\n", 14), 0);
  return 0;
}

/* Copied arguments that outgrow the scratch space overflow. */
TEST(scratch_limit) {
  static lmr_cmd c;
  char big[LMR_CMD_SCRATCH / 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  lmr_cmd_init(&c, 2);
  lmr_cmd_arg_copy(&c, big);
  ASSERT_EQ(c.overflow, 0);
  lmr_cmd_arg_copy(&c, big);
  ASSERT_EQ(c.overflow, 1);
  ASSERT(c.used <= LMR_CMD_SCRATCH);
  return 0;
}

TEST_MAIN(TEST_ENTRY(set_striped), TEST_ENTRY(small_args_merge), TEST_ENTRY(iov_limit),
          TEST_ENTRY(scratch_limit))
