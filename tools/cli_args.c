/* Command-line parsing shared by the measuring tools (cli_args.h). */
#include "cli_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_size(const char *s, uint64_t max, uint64_t *out) {
  uint64_t v = 0;
  const char *p = s;
  if (*p < '0' || *p > '9') return -1;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (UINT64_MAX - 9) / 10) return -1;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  int shift = 0;
  if (*p == 'k' || *p == 'K') shift = 10;
  else if (*p == 'm' || *p == 'M') shift = 20;
  else if (*p == 'g' || *p == 'G') shift = 30;
  if (shift) {
    p++;
    if (strcmp(p, "iB") == 0) p += 2;
    if (v > (UINT64_MAX >> shift)) return -1;
    v <<= shift;
  }
  if (*p != '\0' || v > max) return -1;
  *out = v;
  return 0;
}

const char *cli_value(const char *prog, int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s: %s needs a value\n", prog, name);
    exit(2);
  }
  return argv[++*i];
}
