-- The immutable and transition triggers.
SELECT pgcloud.audit('test.audit_written', 'thing', '1', 'ok', '{"email": "someone@example.com", "n": 1}') > 0 AS audited;
SELECT action, role IS NOT NULL AS has_role, target, result, details, correlation_id IS NOT NULL AS has_cid
  FROM pgcloud.audit_logs WHERE action = 'test.audit_written';
UPDATE pgcloud.audit_logs SET result = 'failed';
DELETE FROM pgcloud.audit_logs;
TRUNCATE pgcloud.audit_logs;
-- Also for the table's owner.
SET ROLE pgcloud_svc_core;
UPDATE pgcloud.audit_logs SET result = 'failed';
DELETE FROM pgcloud.audit_logs WHERE true;
TRUNCATE pgcloud.audit_logs;
RESET ROLE;
SELECT count(*) > 0 AS still_there FROM pgcloud.audit_logs;
-- Result values are checked.
SELECT pgcloud.audit('test.audit_written', 'thing', '1', 'maybe');
SELECT pgcloud.audit('Not An Action', 'thing', '1');
SELECT pgcloud.audit(NULL, 'thing', '1');
SELECT pgcloud.audit('test.', 'thing', '1');
SELECT pgcloud.audit('test._x', 'thing', '1');
SELECT pgcloud.audit('test.audit_written', 'thing', '1', NULL);
SELECT pgcloud.audit('test.audit_written', 'thing', '1', 'ok ');
-- No target, no details (NULL is {}), a result other than ok; ids follow
-- each other.
SELECT pgcloud.audit('test.audit_bare', NULL, NULL, 'denied', NULL) - pgcloud.audit('test.audit_written', 'thing', '2') AS id_step;
SELECT action, actor, target, result, details FROM pgcloud.audit_logs WHERE action = 'test.audit_bare';
-- Each entry is announced as audit.recorded, by the core, with the row as
-- it was written (details scrubbed).
SELECT count(*) AS entries, count(o.id) AS announced,
       count(*) FILTER (WHERE o.source = 'core' AND o.aggregate_type = 'audit'
                          AND o.aggregate_id = current_database() || ':' || l.id
                          AND o.payload = jsonb_build_object('database', current_database(), 'audit_id', l.id, 'at', l.at,
                                'actor', l.actor, 'role', l.role, 'action', l.action, 'target_type', l.target_type,
                                'target_id', l.target_id, 'result', l.result, 'details', l.details,
                                'correlation_id', l.correlation_id)) AS as_written
  FROM pgcloud.audit_logs l
  LEFT JOIN pgcloud.outbox o ON o.event_type = 'audit.recorded' AND o.payload ->> 'audit_id' = l.id::text
 WHERE l.action LIKE 'test.audit%';
SELECT o.payload -> 'details' AS details FROM pgcloud.outbox o
 WHERE o.event_type = 'audit.recorded' AND o.payload ->> 'action' = 'test.audit_written' ORDER BY o.id LIMIT 1;
-- Any table can use the guard.
CREATE TABLE ledger_demo (id int, amount bigint);
CREATE TRIGGER ledger_demo_immutable BEFORE UPDATE OR DELETE ON ledger_demo
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
INSERT INTO ledger_demo VALUES (1, 100);
UPDATE ledger_demo SET amount = 0;
SELECT * FROM ledger_demo;
-- Transitions from a table.
CREATE TABLE machine_transitions (from_state text, to_state text);
INSERT INTO machine_transitions VALUES (NULL, 'requested'), ('requested', 'active'), ('active', 'released'),
    ('requested', 'failed'), ('active', 'failed');
CREATE TABLE machine (id int PRIMARY KEY, state text, note text);
CREATE TRIGGER machine_state BEFORE INSERT OR UPDATE OF state ON machine
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'machine_transitions');
INSERT INTO machine VALUES (1, 'requested');
INSERT INTO machine VALUES (2, 'active');
INSERT INTO machine VALUES (3, NULL);
UPDATE machine SET state = 'active' WHERE id = 1;
UPDATE machine SET note = 'unchanged state is fine' WHERE id = 1;
UPDATE machine SET state = 'requested' WHERE id = 1;
UPDATE machine SET state = 'released' WHERE id = 1;
UPDATE machine SET state = 'active' WHERE id = 1;
SELECT * FROM machine;
-- Several rows in one statement: each row's change is checked (an allowed
-- change is remembered for the rest of the statement only).
INSERT INTO machine VALUES (4, 'requested'), (5, 'requested'), (6, 'requested');
UPDATE machine SET state = 'active' WHERE id IN (4, 5);
UPDATE machine SET state = 'released' WHERE id IN (4, 5, 6);
UPDATE machine SET state = 'active' WHERE id IN (4, 5, 6);
SELECT id, state FROM machine WHERE id >= 4 ORDER BY id;
-- A change of the transitions table is seen by the next statement of the same transaction.
BEGIN;
INSERT INTO machine VALUES (7, 'requested'), (8, 'requested');
UPDATE machine SET state = 'active' WHERE id = 7;
DELETE FROM machine_transitions WHERE from_state = 'requested' AND to_state = 'active';
UPDATE machine SET state = 'active' WHERE id = 8;
ROLLBACK;
-- Misuse is a clear error.
CREATE TABLE wrong (state text);
CREATE TRIGGER wrong_state BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state');
INSERT INTO wrong VALUES ('a');
UPDATE wrong SET state = 'b';
DROP TRIGGER wrong_state ON wrong;
CREATE TRIGGER wrong_state BEFORE UPDATE ON wrong FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('nope', 'machine_transitions');
UPDATE wrong SET state = 'b';
SELECT pgcloud.immutable();
DROP TABLE ledger_demo, machine, machine_transitions, wrong;
