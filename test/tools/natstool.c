/*
 * natstool — a small, independent JetStream client for the tests and the
 * benchmark (nats.c only; it shares no code with pgcloud).
 *
 *   natstool count   URL STREAM                 messages in the stream
 *   natstool read    URL STREAM FILTER MAX      prints up to MAX messages as JSON lines
 *                                               (subject, headers, data) from the start
 *   natstool publish URL SUBJECT N SIZE         raw async JetStream publishing of N
 *                                               messages with Nats-Msg-Id; prints msgs/s
 *   natstool info    URL STREAM                 "replicas=N leader=NODE current=K messages=M"
 *   natstool stream  URL STREAM SUBJECTS [MAX]  creates the stream (file storage) if absent
 *                                               (NATSTOOL_REPLICAS replicas, default 1);
 *                                               with MAX (also on an existing stream), it
 *                                               refuses messages beyond MAX (-1: no limit);
 *                                               NATSTOOL_MAX_MSG_SIZE=B refuses larger ones
 * NATSTOOL_CA names a CA bundle for tls:// URLs; user:password@ goes in the URL;
 * NATSTOOL_INBOX sets the inbox prefix the user may read (_INBOX_<user>).
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
die(const char *what, natsStatus s)
{
	fprintf(stderr, "natstool: %s: %s\n", what, natsStatus_GetText(s));
	exit(1);
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
json_string(const char *s, int len)
{
	putchar('"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

int
main(int argc, char **argv)
{
	natsConnection *nc = NULL;
	jsCtx	   *js = NULL;
	jsOptions	jo;
	natsStatus	s;

	if (argc < 3)
	{
		fprintf(stderr, "usage: natstool count|read|publish|stream URL ...\n");
		return 2;
	}
	{
		/* NATSTOOL_CA: CA bundle for tls:// servers (user:password@ in the URL). */
		natsOptions *opts = NULL;
		const char *ca = getenv("NATSTOOL_CA");

		if ((s = natsOptions_Create(&opts)) == NATS_OK)
			s = natsOptions_SetURL(opts, argv[2]);
		const char *inbox = getenv("NATSTOOL_INBOX");

		if (s == NATS_OK && ca != NULL && ca[0] != '\0')
			s = natsOptions_LoadCATrustedCertificates(opts, ca);
		if (s == NATS_OK && inbox != NULL && inbox[0] != '\0')
			s = natsOptions_SetCustomInboxPrefix(opts, inbox);
		if (s == NATS_OK)
			s = natsOptions_SetTimeout(opts, 3000);
		if (s == NATS_OK)
			s = natsConnection_Connect(&nc, opts);
		natsOptions_Destroy(opts);
		if (s != NATS_OK)
			die("connect", s);
	}
	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = 4096;
	if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK)
		die("jetstream", s);

	if (strcmp(argv[1], "count") == 0 && argc == 4)
	{
		jsStreamInfo *si = NULL;

		if ((s = js_GetStreamInfo(&si, js, argv[3], NULL, NULL)) != NATS_OK)
			die("stream info", s);
		printf("%llu\n", (unsigned long long) si->State.Msgs);
		jsStreamInfo_Destroy(si);
	}
	else if (strcmp(argv[1], "info") == 0 && argc == 4)
	{
		jsStreamInfo *si = NULL;
		int			current = 0;

		if ((s = js_GetStreamInfo(&si, js, argv[3], NULL, NULL)) != NATS_OK)
			die("stream info", s);
		if (si->Cluster != NULL)
		{
			current = si->Cluster->Leader != NULL ? 1 : 0;
			for (int i = 0; i < si->Cluster->ReplicasLen; i++)
				current += si->Cluster->Replicas[i]->Current ? 1 : 0;
		}
		printf("replicas=%d leader=%s current=%d messages=%llu\n", (int) si->Config->Replicas,
			   si->Cluster != NULL && si->Cluster->Leader != NULL ? si->Cluster->Leader : "none",
			   current, (unsigned long long) si->State.Msgs);
		jsStreamInfo_Destroy(si);
	}
	else if (strcmp(argv[1], "stream") == 0 && (argc == 5 || argc == 6))
	{
		jsStreamConfig cfg;
		const char *subjects[1] = {argv[4]};

		jsStreamConfig_Init(&cfg);
		cfg.Name = argv[3];
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Duplicates = (int64_t) 120 * 1000 * 1000 * 1000;
		if (getenv("NATSTOOL_REPLICAS") != NULL)
			cfg.Replicas = atoi(getenv("NATSTOOL_REPLICAS"));
		if (argc == 6)
		{
			/* a storage limit that refuses new messages (fault injection) */
			cfg.MaxMsgs = atoll(argv[5]);
			cfg.Discard = js_DiscardNew;
		}
		if (getenv("NATSTOOL_MAX_MSG_SIZE") != NULL)
			cfg.MaxMsgSize = atoi(getenv("NATSTOOL_MAX_MSG_SIZE"));	/* refuses larger messages (fault injection) */
		s = js_AddStream(NULL, js, &cfg, NULL, NULL);
		if (s != NATS_OK && (argc == 6 || getenv("NATSTOOL_MAX_MSG_SIZE") != NULL))
			s = js_UpdateStream(NULL, js, &cfg, NULL, NULL);	/* impose the limit on an existing stream */
		if (s != NATS_OK && s != NATS_ERR)
			die("add stream", s);
	}
	else if (strcmp(argv[1], "read") == 0 && argc == 6)
	{
		natsSubscription *sub = NULL;
		jsSubOptions so;
		int			max = atoi(argv[5]);
		int			got = 0;

		jsSubOptions_Init(&so);
		so.Stream = argv[3];
		so.Config.DeliverPolicy = js_DeliverAll;
		so.Config.AckPolicy = js_AckNone;
		if ((s = js_PullSubscribe(&sub, js, argv[4], NULL, NULL, &so, NULL)) != NATS_OK)
			die("subscribe", s);
		while (got < max)
		{
			natsMsgList list = {0};

			s = natsSubscription_Fetch(&list, sub, max - got < 256 ? max - got : 256, 2000, NULL);
			if (s == NATS_TIMEOUT)
				break;
			if (s != NATS_OK)
				die("fetch", s);
			for (int i = 0; i < list.Count; i++)
			{
				natsMsg    *m = list.Msgs[i];
				const char **keys = NULL;
				int			nkeys = 0;

				printf("{\"subject\": ");
				json_string(natsMsg_GetSubject(m), (int) strlen(natsMsg_GetSubject(m)));
				printf(", \"headers\": {");
				if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK)
				{
					for (int k = 0; k < nkeys; k++)
					{
						const char *v = NULL;

						natsMsgHeader_Get(m, keys[k], &v);
						printf("%s", k ? ", " : "");
						json_string(keys[k], (int) strlen(keys[k]));
						printf(": ");
						json_string(v ? v : "", v ? (int) strlen(v) : 0);
					}
					free((void *) keys);
				}
				printf("}, \"data\": ");
				json_string(natsMsg_GetData(m), natsMsg_GetDataLength(m));
				printf("}\n");
				got++;
			}
			natsMsgList_Destroy(&list);
		}
		natsSubscription_Destroy(sub);
	}
	else if (strcmp(argv[1], "publish") == 0 && argc == 6)
	{
		int			n = atoi(argv[4]);
		int			size = atoi(argv[5]);
		char	   *body = malloc(size + 1);
		char		id[64];
		double		t0;
		jsPubOptions po;

		memset(body, 'x', size);
		body[size] = '\0';
		t0 = now_seconds();
		for (int i = 0; i < n; i++)
		{
			natsMsg    *m = NULL;

			snprintf(id, sizeof(id), "raw-%ld-%d", (long) t0, i);
			if ((s = natsMsg_Create(&m, argv[3], NULL, body, size)) != NATS_OK)
				die("msg", s);
			natsMsgHeader_Set(m, "Nats-Msg-Id", id);
			if ((s = js_PublishMsgAsync(js, &m, NULL)) != NATS_OK)
				die("publish", s);
		}
		jsPubOptions_Init(&po);
		po.MaxWait = 60000;
		if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK)
			die("complete", s);
		printf("%.0f\n", n / (now_seconds() - t0));
		free(body);
	}
	else
	{
		fprintf(stderr, "natstool: bad arguments\n");
		return 2;
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return 0;
}
