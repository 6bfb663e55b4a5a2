/*
 * sanitize.h — log/text scrubber (plain C99, no PostgreSQL headers).
 *
 * Compiled into the pgcloud extension (log_scrub.c) and standalone into the
 * libFuzzer target test/fuzz/fuzz_sanitize.c and test/fuzz/sanitize_vectors.c.
 * Linear time, never reads past len, allocates only through PgcBuf.grow.
 * The rules and their exact boundaries are documented at the top of
 * sanitize.c.
 */
#ifndef PGC_SANITIZE_H
#define PGC_SANITIZE_H

#include <stddef.h>

/*
 * Allocator callback: like realloc(ptr, size) (ptr may be NULL; contents up to
 * the old size are preserved); arg is PgcBuf.arg.  Must not return NULL (may
 * abort/longjmp instead).
 */
typedef void *(*pgc_realloc_fn)(void *ptr, size_t size, void *arg); /* must not return NULL (may abort/longjmp) */

/*
 * Growable output buffer: data[0..len) holds the text, cap is the allocated
 * size (data may be NULL when cap is 0), grow/arg the allocator.
 */
typedef struct PgcBuf { char *data; size_t len; size_t cap; pgc_realloc_fn grow; void *arg; } PgcBuf;

/* Scrubs in[0..len) into out (appended; out->data is NUL-terminated after return). Returns number of redactions. Input may contain NUL bytes and arbitrary non-UTF-8 bytes; they are copied through (except inside redacted spans). */
int pgc_sanitize(const char *in, size_t len, PgcBuf *out);

/* Fast pre-check: returns 0 only if in[0..len) certainly contains nothing that pgc_sanitize would redact (lets callers skip copying). May return 1 conservatively. */
int pgc_sanitize_needed(const char *in, size_t len);

#endif							/* PGC_SANITIZE_H */
