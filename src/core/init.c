/*
 * init.c — the library's single entry point. Each subsystem initialises
 * itself; nothing else happens here.
 */
#include "pgcloud.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	PgcloudGucInit();
	PgcloudLogScrubInit();
	PgcloudRateLimitInit();
	PgcloudWorkersInit();
}
