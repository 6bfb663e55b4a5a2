-- The operator query of one database: its event health, as lines of
-- "<cluster> <database> <what> key=value ...". Run in each service database
-- (scripts/multicluster.sh lag runs it everywhere and adds each durable's
-- backlog from JetStream):
--   psql -X -tA -F ' ' -v cluster=NAME -d DATABASE -f scripts/ops/event-lag.sql
--   outbox   pending events not yet published, the oldest one's age, deliveries
--            being retried, dead letters
--   durable  per subscribing service here (its JetStream durable): events
--            applied, age of the last one applied, dead letters
--   worker   each pgcloud worker of the database: state, failures, last error
SELECT :'cluster', current_database(), 'outbox',
       format('pending=%s oldest_pending_s=%s retrying=%s dead_letters=%s',
              l.pending, l.oldest_pending_seconds, l.retrying, l.dead_letters)
  FROM pgcloud.outbox_lag l
UNION ALL
SELECT :'cluster', current_database(), 'durable',
       format('%s applied=%s last_applied_age_s=%s dead_letters=%s', s.name,
              (SELECT count(*) FROM pgcloud.inbox i WHERE i.subscriber = s.name),
              coalesce((SELECT round(extract(epoch FROM now() - max(i.processed_at))::numeric, 1)
                          FROM pgcloud.inbox i WHERE i.subscriber = s.name)::text, '-'),
              (SELECT count(*) FROM pgcloud.dead_letters d WHERE d.subscriber = s.name))
  FROM pgcloud.nats_subscribers() AS s(name)
UNION ALL
SELECT :'cluster', current_database(), 'worker',
       format('%s state=%s processed=%s failures=%s last_error=%s', w.worker, w.state, w.processed,
              w.failures, coalesce(nullif(left(w.last_error, 120), ''), '-'))
  FROM pgcloud.workers w WHERE w.database = current_database();
