/*
 * authorize.c — pgcloud.authorize('user') for api functions written in C.
 *
 * A request whose role is pgcloud_user or pgcloud_admin passes: what
 * pgcloud.authorize('user') answers for it (operator or not), without the
 * call. Every other request is decided by pgcloud.authorize('user') itself:
 * operators pass, the rest are refused with its errors (unauthenticated,
 * forbidden). Authorization stays decided in one place (35_authorize.sql);
 * this only skips the call when its answer is known.
 */
#include "pgcloud.h"

#include "nodes/makefuncs.h"
#include "parser/parse_func.h"

void
PgcloudAuthorizeUser(void)
{
	char	   *role = PgcloudRequestRole();
	Oid			argtypes[1] = {TEXTOID};

	if (role != NULL && (strcmp(role, "pgcloud_user") == 0 || strcmp(role, "pgcloud_admin") == 0))
		return;
	/* (looked up each time: a rare path, and no oid kept across a reinstall) */
	(void) OidFunctionCall1(LookupFuncName(list_make2(makeString("pgcloud"), makeString("authorize")),
										   1, argtypes, false),
							CStringGetTextDatum("user"));
}
