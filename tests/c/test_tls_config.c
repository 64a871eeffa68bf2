/* TLS settings of lmr_client_open that need no server: validation, files
 * that cannot be loaded, and a handshake that gets no answer. (Handshakes
 * with a real TLS redis-server are in tests/test_tls.py.) */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmcache_redis.h"
#include "test.h"

static int open_fails(const lmr_config *cfg, int code, const char *needle) {
  lmr_client *c = (lmr_client *)1;
  lmr_error err;
  int rc = lmr_client_open(&c, cfg, &err);
  if (rc == LMR_OK) lmr_client_free(c);
  ASSERT_EQ(rc, code);
  ASSERT_EQ(err.code, code);
  ASSERT(c == NULL);
  if (strstr(err.msg, needle) == NULL) TEST_FAIL_("message \"%s\" lacks \"%s\"", err.msg, needle);
  return 0;
}

static void tls_config(lmr_config *cfg) {
  lmr_config_init(cfg);
  cfg->host = "127.0.0.1";
  cfg->port = 1;  /* nothing listens: only reached when validation passes */
  cfg->connections = 1;
  cfg->tls = 1;
}

TEST(defaults) {
  lmr_config cfg;
  lmr_config_init(&cfg);
  ASSERT_EQ(cfg.tls, 0);
  ASSERT_EQ(cfg.tls_verify, 1);
  ASSERT(cfg.tls_ca_file == NULL && cfg.tls_cert_file == NULL && cfg.tls_key_file == NULL);
  ASSERT(cfg.tls_server_name == NULL);
  return 0;
}

TEST(invalid_combinations) {
  lmr_config cfg;
  tls_config(&cfg);
  cfg.unix_path = "/tmp/redis.sock";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "not unix_socket_path"), 0);

  tls_config(&cfg);
  cfg.tls = 0;
  cfg.tls_ca_file = "/etc/ssl/certs/ca-certificates.crt";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "given without ssl=True"), 0);

  tls_config(&cfg);
  cfg.tls_key_file = "/tmp/key.pem";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "needs ssl_certfile"), 0);

  tls_config(&cfg);
  cfg.tls_server_name = "";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "must not be empty"), 0);
  return 0;
}

TEST(files_that_cannot_be_loaded) {
  lmr_config cfg;
  tls_config(&cfg);
  cfg.tls_ca_file = "/nonexistent/ca.pem";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "CA file /nonexistent/ca.pem: No such file"), 0);

  tls_config(&cfg);
  cfg.tls_cert_file = "/nonexistent/client.pem";
  ASSERT_EQ(open_fails(&cfg, LMR_EINVAL, "certificate file /nonexistent/client.pem"), 0);

  /* A file that is not PEM at all. */
  char path[] = "/tmp/lmr-test-tls-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, "not a certificate\n", 18), 18);
  close(fd);
  tls_config(&cfg);
  cfg.tls_ca_file = path;
  int rc = open_fails(&cfg, LMR_EINVAL, "CA file");
  unlink(path);
  ASSERT_EQ(rc, 0);
  return 0;
}

TEST(verification_off_still_needs_a_server) {
  lmr_config cfg;
  tls_config(&cfg);
  cfg.tls_verify = 0;
  ASSERT_EQ(open_fails(&cfg, LMR_ECONN, "cannot connect to 127.0.0.1:1"), 0);
  return 0;
}

/* A port that accepts connections (the kernel's backlog) but never answers
 * the ClientHello: the handshake ends at connect_timeout. */
TEST(silent_server_times_out_in_the_handshake) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(ls >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  ASSERT_EQ(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
  ASSERT_EQ(listen(ls, 8), 0);
  ASSERT_EQ(getsockname(ls, (struct sockaddr *)&sa, &len), 0);
  lmr_config cfg;
  tls_config(&cfg);
  cfg.port = ntohs(sa.sin_port);
  cfg.connect_timeout = 0.2;
  int rc = open_fails(&cfg, LMR_ETIMEDOUT, "TLS handshake with 127.0.0.1:");
  close(ls);
  ASSERT_EQ(rc, 0);
  return 0;
}

TEST_MAIN(TEST_ENTRY(defaults), TEST_ENTRY(invalid_combinations),
          TEST_ENTRY(files_that_cannot_be_loaded),
          TEST_ENTRY(verification_off_still_needs_a_server),
          TEST_ENTRY(silent_server_times_out_in_the_handshake))
