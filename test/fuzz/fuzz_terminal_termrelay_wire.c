/*
 * fuzz_terminal_termrelay_wire.c — libFuzzer target for the terminal relay's parsers
 * of browser input (termrelay/wire.c): the Sec-WebSocket-Protocol header
 * that carries the terminal token, and resize messages.
 * fuzz-sources: termrelay/wire.c
 *
 * Build and run from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core termrelay/wire.c \
 *       test/fuzz/fuzz_terminal_termrelay_wire.c -o build/fuzz_terminal_termrelay_wire
 *   build/fuzz_terminal_termrelay_wire -max_total_time=60 test/fuzz/corpus/terminal_termrelay_wire
 *
 * Checked for every input (an exactly-sized heap copy, so ASan sees any read
 * past the end): a token found is 1..WIRE_MAX_TOKEN characters of
 * [A-Za-z0-9_-] and appears in the input right after "pgcloud.token."; a
 * resize accepted is within 2..1000 both ways.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../termrelay/wire.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *copy = malloc(size ? size : 1);
	char		token[WIRE_MAX_TOKEN + 1];
	int			cols,
				rows;

	memcpy(copy, data, size);
	if (wire_token_from_protocols(copy, size, token, sizeof(token)) == 0)
	{
		size_t		n = strlen(token);
		char		needle[WIRE_MAX_TOKEN + 32];

		if (n == 0 || n > WIRE_MAX_TOKEN || strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != n)
			abort();
		strcpy(needle, WIRE_TOKEN_PREFIX);
		strcat(needle, token);
		if (!memmem(copy, size, needle, strlen(needle)))
			abort();
	}
	if (wire_parse_resize(copy, size, &cols, &rows) == 0 && (cols < 2 || cols > 1000 || rows < 2 || rows > 1000))
		abort();
	free(copy);
	return 0;
}
