/*
 * nats_link.h — the JetStream connection of a worker (nats.c): connect with
 * backoff, ensure the stream and durable consumers, close on every path.
 */
#ifndef PGCLOUD_NATS_LINK_H
#define PGCLOUD_NATS_LINK_H

#include <signal.h>
#include <nats/nats.h>

#include "utils/timestamp.h"

#define PGCLOUD_STREAM "PGCLOUD_EVENTS"
#define PGCLOUD_SUBJECT_PREFIX "pgcloud."

typedef struct NatsLink
{
	natsConnection *conn;
	jsCtx	   *js;
	int			failures;		/* consecutive connection failures, for backoff */
	char		inbox_prefix[NAMEDATALEN + 8];	/* replies come on <prefix>.>: "_INBOX_<user>" or "_INBOX" */
	int64		max_msg_bytes;	/* the largest message the stream and server take (headers + body); 0: unknown */
	TimestampTz limits_read_at;
} NatsLink;

/* Connects (when not connected) and ensures the stream; false (and logs once per outage) on failure. */
extern bool NatsLinkEnsure(NatsLink *link, jsOptions *jsopts);
extern void NatsLinkClose(NatsLink *link);
/* True when connected (a closed connection is not reopened by nats.c: NatsLinkEnsure does it). */
extern bool NatsLinkConnected(NatsLink *link);
/* Around every nats.c call that may start a thread: the thread takes no signal. */
extern void NatsLinkBlockSignals(sigset_t *saved);
extern void NatsLinkRestoreSignals(const sigset_t *saved);
/* Milliseconds to wait before the next connection attempt (exponential, jittered, capped). */
extern long NatsLinkBackoffMs(NatsLink *link);
/*
 * Reads max_msg_bytes again (the stream's max_msg_size and the server's
 * max_payload) when it was read more than max_age_ms ago (0: now).
 */
extern void NatsLinkReadLimits(NatsLink *link, long max_age_ms);
/* Records a failure; logs the first of an outage at WARNING with the reason. */
extern void NatsLinkFailed(NatsLink *link, const char *what, natsStatus s);

#endif
