/* Command-line parsing shared by the measuring tools (null_server.c,
 * tcp_pump.c). */
#ifndef LMR_TOOLS_CLI_ARGS_H
#define LMR_TOOLS_CLI_ARGS_H

#include <stdint.h>

/* Digits with an optional binary suffix (K/KiB, M/MiB, G/GiB), at most max.
 * Returns 0, or -1 when malformed or too large. */
int cli_size(const char *s, uint64_t max, uint64_t *out);

/* If argv[*i] is "--name value" or "--name=value", returns the value (and
 * moves *i past it); else NULL. A missing value exits with status 2. */
const char *cli_value(const char *prog, int argc, char **argv, int *i, const char *name);

#endif
