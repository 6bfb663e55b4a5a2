/*
 * wire.h — parsers of the untrusted bytes the terminal relay reads from
 * browsers: the Sec-WebSocket-Protocol header and resize messages. Plain C,
 * no libwebsockets, so test/fuzz/fuzz_termrelay_wire.c can fuzz them.
 */
#ifndef TERMRELAY_WIRE_H
#define TERMRELAY_WIRE_H

#include <stddef.h>

#define WIRE_TOKEN_PREFIX "pgcloud.token."
#define WIRE_MAX_TOKEN 200

/*
 * Finds the subprotocol "pgcloud.token.<token>" in a Sec-WebSocket-Protocol
 * header value hdr[0..len) (comma-separated, optional spaces). The token is
 * 1..WIRE_MAX_TOKEN characters of [A-Za-z0-9_-]. Writes it NUL-terminated to
 * token (toklen > WIRE_MAX_TOKEN) and returns 0; -1 when absent or malformed.
 */
int			wire_token_from_protocols(const char *hdr, size_t len, char *token, size_t toklen);

/*
 * Parses a resize message body {"cols":N,"rows":M} (any key order, optional
 * spaces). Returns 0 with 2 <= cols, rows <= 1000; -1 otherwise.
 */
int			wire_parse_resize(const char *p, size_t n, int *cols, int *rows);

#endif
