-- billing: usage accrual. Each interval charged once however the job runs
-- (twice, late, in steps); the last interval prorated to the second; an
-- allocation's usage = floor(price x active seconds / 3600) exactly; nothing
-- for an allocation that failed before activation; order of events does not
-- matter; the pg_cron job.
BEGIN;
SELECT * FROM no_plan();

\set u '''dddddddd-0000-4000-8000-00000000000d'''

CREATE FUNCTION pg_temp.activate(a uuid, price bigint, started timestamptz, u text DEFAULT 'dddddddd-0000-4000-8000-00000000000d')
RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.handle('billing', 'allocation.activated', a::text, jsonb_build_object('allocation_id', a, 'user_id', u,
                      'sku', 'h100x1', 'price_per_hour', price, 'currency', 'usd', 'started_at', started,
                      'node_hostname', 'gpu-01'))
$$;
CREATE FUNCTION pg_temp.finish(a uuid, t text, ended timestamptz) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.handle('billing', t, a::text, jsonb_build_object('allocation_id', a, 'user_id', 'dddddddd-0000-4000-8000-00000000000d',
                      'ended_at', ended, 'reason', 'test'))
$$;
CREATE FUNCTION pg_temp.charged(a uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(amount), 0)::bigint FROM billing.usage_records WHERE allocation_id = a
$$;

SELECT pg_temp.handle('billing', 'user.created', :u, jsonb_build_object('user_id', :u));
SELECT api.admin_adjust_balance(:u, 100000000, 'test float');

-- ---- one allocation by hand -----------------------------------------------------------
-- 997/h from 20 min 30.6 s ago; runs at -15 min, -15 min again, then now.
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000001', 997, now() - interval '20 minutes 30.6 seconds');
SELECT is((SELECT count(*) FROM billing.usage_records WHERE allocation_id = 'e0000000-0000-4000-8000-000000000001'),
    20::bigint, 'activation charges the 20 complete intervals at once');
SELECT is(billing.accrue(now() - interval '15 minutes') ->> 'usage_records', '0', 'a run as of earlier charges nothing more');
SELECT is(billing.accrue() ->> 'usage_records', '0', 'a second run now charges nothing more');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000001'), 332::bigint,
    '20 minutes at 997/h: floor(997 x 1200 / 3600) = 332');
SELECT is((SELECT array_agg(amount ORDER BY interval_no) FROM billing.usage_records
            WHERE allocation_id = 'e0000000-0000-4000-8000-000000000001' AND interval_no < 4),
    ARRAY[16, 17, 16, 17]::bigint[], 'intervals are floored cumulatively: 16.62 per minute becomes 16, 17, 16, 17, ...');
SELECT pg_temp.finish('e0000000-0000-4000-8000-000000000001', 'allocation.released', now() - interval '10 seconds');
SELECT is((SELECT seconds || ' ' || amount FROM billing.usage_records
            WHERE allocation_id = 'e0000000-0000-4000-8000-000000000001' AND interval_no = 20),
    '20 5', 'the end charges the last partial interval, prorated to the second (20 s: 5)');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000001'), 337::bigint,
    'total = floor(997 x 1220 / 3600) = 337: price x active time, no more, no less');
SELECT is((SELECT settled FROM billing.allocations WHERE allocation_id = 'e0000000-0000-4000-8000-000000000001'), true,
    'the allocation is settled');
SELECT is(billing.accrue() ->> 'usage_records', '0', 'a settled allocation is never charged again');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE kind = 'usage_debit' AND cause_id IN
            (SELECT id::text FROM billing.usage_records WHERE allocation_id = 'e0000000-0000-4000-8000-000000000001')),
    21::bigint, 'one usage_debit entry per usage record');

-- ---- before / after activation, event order, price 0, interval policy ------------------------
SELECT pg_temp.finish('e0000000-0000-4000-8000-000000000002', 'allocation.failed', now() - interval '1 hour');
SELECT billing.accrue();
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000002'), 0::bigint,
    'an allocation that failed before activation is never charged');
SELECT is((SELECT started_at FROM billing.allocations WHERE allocation_id = 'e0000000-0000-4000-8000-000000000002'), NULL,
    'it is known as never active');
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000003', 3600, now() - interval '30 minutes');
SELECT pg_temp.finish('e0000000-0000-4000-8000-000000000003', 'allocation.failed', now() - interval '25 minutes 1 second');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000003'), 299::bigint,
    'one that failed after activation is charged up to ended_at (299 s at 3600/h)');
-- The end arrives before the activation (out of order): charged once both are known.
SELECT pg_temp.finish('e0000000-0000-4000-8000-000000000004', 'allocation.released', now() - interval '5 minutes');
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000004', 7200, now() - interval '7 minutes 30 seconds');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000004'), 300::bigint,
    'end before activation: charged for the 150 s between them');
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000004', 999999, now() - interval '1 day');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000004'), 300::bigint, 'a replayed activation changes nothing');
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000005', 0, now() - interval '5 minutes');
SELECT is((SELECT count(*) || ' ' || sum(amount) FROM billing.usage_records
            WHERE allocation_id = 'e0000000-0000-4000-8000-000000000005'), '5 0', 'a free SKU: usage recorded, nothing charged');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE cause_id IN
            (SELECT id::text FROM billing.usage_records WHERE allocation_id = 'e0000000-0000-4000-8000-000000000005')),
    0::bigint, 'and no zero ledger entries');
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '300');
SELECT pg_temp.activate('e0000000-0000-4000-8000-000000000006', 1200, now() - interval '16 minutes');
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '60');
SELECT is((SELECT max(a.interval_seconds) || ' ' || count(*) FROM billing.allocations a JOIN billing.usage_records u USING (allocation_id)
            WHERE a.allocation_id = 'e0000000-0000-4000-8000-000000000006'),
    '300 3', 'the interval is fixed at activation: a later policy change does not realign it');
SELECT is(pg_temp.charged('e0000000-0000-4000-8000-000000000006'), 300::bigint, 'three 5-minute intervals at 1200/h');

-- ---- many allocations, runs in steps, ends before and after the runs --------------------------
SELECT setseed(0.4242);
CREATE TEMP TABLE fleet AS
SELECT gen_random_uuid() AS id, (1 + floor(random() * 250000))::bigint AS price,
       now() - make_interval(secs => 7200 + floor(random() * 3600) + random()) AS started,
       CASE WHEN i % 3 = 0 THEN NULL ELSE floor(random() * 7000)::int END AS secs,
       i % 2 = 0 AS late_end
  FROM generate_series(1, 60) AS i;
-- Ends known early (here even before the activation: events out of order).
SELECT count(pg_temp.finish(id, 'allocation.released', started + make_interval(secs => secs + random())))
  FROM fleet WHERE secs IS NOT NULL AND NOT late_end;
SELECT count(pg_temp.activate(id, price, started)) FROM fleet;
SELECT billing.accrue(now() - interval '90 minutes');
SELECT billing.accrue(now() - interval '90 minutes');
SELECT billing.accrue(now() - interval '61 minutes');
SELECT billing.accrue(now());
-- Ends that arrive after intervals past them were charged.
SELECT count(pg_temp.finish(id, 'allocation.released', started + make_interval(secs => secs + random())))
  FROM fleet WHERE secs IS NOT NULL AND late_end;
SELECT billing.accrue(now());
SELECT billing.accrue(now());

SELECT is_empty($$
    SELECT f.id, pg_temp.charged(f.id), f.price * floor(extract(epoch FROM a.ended_at - a.started_at))::bigint / 3600
      FROM fleet f JOIN billing.allocations a ON a.allocation_id = f.id
     WHERE f.secs IS NOT NULL
       AND pg_temp.charged(f.id) <> billing.prorate(f.price, floor(extract(epoch FROM a.ended_at - a.started_at))::bigint)
$$, 'every ended allocation is charged exactly floor(price x active seconds / 3600), ends early or late');
SELECT is_empty($$
    SELECT f.id FROM fleet f JOIN billing.allocations a ON a.allocation_id = f.id
     WHERE f.secs IS NULL
       AND pg_temp.charged(f.id) <> billing.prorate(f.price, floor(extract(epoch FROM now() - a.started_at) / 60)::bigint * 60)
$$, 'every running allocation is charged exactly its complete intervals');
SELECT is((SELECT count(*) FROM billing.usage_records u JOIN fleet f ON f.id = u.allocation_id WHERE u.kind = 'correction'),
          (SELECT count(*) FROM fleet f WHERE f.late_end AND f.secs IS NOT NULL),
    'a correction exactly for the late ends that came after intervals past them were charged');
SELECT is((SELECT count(*) - count(DISTINCT (u.allocation_id, u.interval_no)) FROM billing.usage_records u
             JOIN fleet f ON f.id = u.allocation_id WHERE u.kind = 'interval'), 0::bigint,
    'no interval charged twice');
SELECT is_empty($$SELECT * FROM billing.verify_ledger()$$, 'the ledger is consistent after all of it');

-- ---- the batch: the running allocations of a run in one statement; a bad one falls back alone ----
-- Five allocations of one account, 6000/h, three complete 60 s intervals each (100 each).
INSERT INTO billing.allocations (allocation_id, account_id, sku, node_hostname, price_per_hour, currency,
                                 interval_seconds, started_at)
SELECT ('b0000000-0000-4000-8000-00000000000' || i)::uuid, :u::uuid, 'h100x1', 'gpu-b', 6000, 'usd', 60,
       now() - interval '185 seconds'
  FROM generate_series(1, 5) i;
CREATE TEMP TABLE before_batch AS
SELECT (SELECT balance FROM billing.balances WHERE account_id = :u::uuid) AS balance,
       (SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'ledger.entry_posted') AS events;
SELECT is((SELECT b::text FROM billing.accrue_batch(now()) b), '(5,15)',
    'the batch charges the five running allocations: 15 usage records');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :u::uuid), (SELECT balance - 1500 FROM before_batch),
    'the balance fell by exactly their 15 x 100');
SELECT is((SELECT count(*) FROM billing.ledger_entries e JOIN billing.usage_records r ON e.cause_id = r.id::text
            WHERE e.kind = 'usage_debit' AND r.allocation_id::text LIKE 'b0000000-%'), 15::bigint,
    'one usage_debit entry per record');
SELECT is((SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'ledger.entry_posted') - (SELECT events FROM before_batch),
    15::bigint, 'and one ledger.entry_posted event per entry');
SELECT is((SELECT array_agg(next_interval || '/' || charged_seconds || '/' || charged_amount ORDER BY allocation_id)
             FROM billing.allocations WHERE allocation_id::text LIKE 'b0000000-%'),
    array_fill('3/180/300'::text, ARRAY[5]), 'each cursor moved past the three intervals, with their seconds and amounts');
SELECT is(billing.accrue() ->> 'usage_records', '0', 'a run after it charges nothing more');
-- Three more; the second's first interval was charged behind the run's back,
-- so the batch fails (unique interval) and is undone: the others are charged
-- one by one, that one fails alone, noted and audited.
INSERT INTO billing.allocations (allocation_id, account_id, sku, node_hostname, price_per_hour, currency,
                                 interval_seconds, started_at)
SELECT ('c0000000-0000-4000-8000-00000000000' || i)::uuid, :u::uuid, 'h100x1', 'gpu-c', 6000, 'usd', 60,
       now() - interval '185 seconds'
  FROM generate_series(1, 3) i;
INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start, period_end, seconds,
                                   price_per_hour, amount, currency)
VALUES ('c0000000-0000-4000-8000-000000000002', :u::uuid, 'interval', 0, now() - interval '185 seconds',
        now() - interval '125 seconds', 60, 6000, 100, 'usd');
SELECT is(billing.accrue() - 'as_of', '{"failed": 1, "allocations": 2, "usage_records": 6, "force_release_requests": 0}'::jsonb,
    'a failing allocation undoes the batch: the two others are still charged, one by one');
SELECT is((SELECT count(*) FROM billing.usage_records WHERE allocation_id = 'c0000000-0000-4000-8000-000000000002'), 1::bigint,
    'the failing one gets nothing more');
SELECT matches((SELECT last_error FROM billing.allocations WHERE allocation_id = 'c0000000-0000-4000-8000-000000000002'),
    'usage_records_interval_once', 'its last_error names the cause');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'billing.accrual_failed'
            AND target_id = 'c0000000-0000-4000-8000-000000000002'), 1::bigint, 'and the failure is audited');
SELECT is_empty($$SELECT * FROM billing.verify_ledger()$$, 'the ledger is consistent after the batches');

-- ---- the scheduler ------------------------------------------------------------------------------------
SELECT is((SELECT function FROM pgcloud.jobs WHERE job = 'billing.accrue'), 'billing.accrue(timestamp with time zone)',
    'the accrual is a job installed with billing');
SELECT is((SELECT schedule FROM pgcloud.jobs WHERE job = 'billing.accrue'),
    'every 60 s (policy billing.accrual_interval_seconds)', 'on its policy interval');

SELECT * FROM finish();
ROLLBACK;
