-- pgcloud_billing: usage metering, the immutable ledger and balances.
-- Schema billing, owned by pgcloud_svc_billing (created by pgcloud.service_begin).
--
-- Decisions:
--   * Money is bigint minor units with a currency (one per account); no float
--     or numeric is ever stored (numeric appears only inside the proration
--     arithmetic, which floors to bigint).
--   * billing.ledger_entries is append-only (pgcloud.immutable); every entry
--     carries its account's balance after it. A C trigger (billing.ledger_post,
--     src/billing/ledger.c) computes that balance under the account's row lock
--     from the newest entry, so any INSERT is correct by construction; the
--     balance is the newest entry's balance_after (billing.balances: one index
--     descent, at any ledger size); billing.verify_ledger() proves the chain and
--     balance = sum of entries at any time. The account row is locked, never
--     rewritten, by a posting: no dead versions pile up on a busy account.
--   * Each entry names its cause (payment = Stripe Checkout Session id,
--     usage_record, refund, adjustment); (kind, cause_id) is unique, so no cause
--     is booked twice, whatever the delivery order or count of events.
--   * Usage: one record per accrual interval of an allocation, numbered from
--     its start; amounts are prorated to the second with cumulative flooring
--     (interval k costs floor(p*e(k+1)/3600) - floor(p*e(k)/3600) where e is the
--     elapsed whole seconds), so the records of an allocation always add up to
--     floor(price_per_hour * active seconds / 3600): no more, no less.
--   * Refunds: payments asks (refund.requested); billing debits under the
--     account lock, or declines (billing.refund_declined) when the balance
--     would go negative and the request does not allow it. Payments writes the
--     Stripe refund intent only when it sees the debit (ledger.entry_posted);
--     a refund that fails at Stripe comes back as refund.failed and is
--     reversed by a new entry. See sql/payments/50_refunds.sql.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('currency_mismatch', 409, 'The currency does not match the account''s currency.', 'billing');
-- allocation_not_found is the core's (shared).

-- billing.accrual_interval_seconds, billing.min_balance_to_allocate and
-- billing.low_balance_threshold are seeded by the core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('billing.currency', '"usd"', 'Currency of new accounts (ISO 4217, lower case); an account holds one currency.'),
    ('billing.ledger_page_max', '200', 'Most ledger entries api.ledger() returns in one page.'),
    ('billing.usage_records_max', '1000', 'Most usage records api.usage() lists (the most recent; totals always cover all).'),
    ('billing.force_release_repeat_seconds', '300', 'How long after a billing.force_release_requested event the accrual job asks again while the account stays exhausted and allocations are still active (seconds).'),
    ('billing.bill_provisioning', 'false', 'Whether an allocation is billed from its request (the provisioning phase included) rather than from its activation; a deployment that fails is never billed.');
