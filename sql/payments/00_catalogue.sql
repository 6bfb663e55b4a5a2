-- pgcloud_payments: Stripe Checkout top-ups, signed webhooks, refunds.
-- Schema payments, owned by pgcloud_svc_payments (created by pgcloud.service_begin).
--
-- Decisions:
--   * A top-up is a payments.payment_sessions row and a Stripe intent
--     (pgcloud.http_request) written in one transaction; the HTTP executor
--     creates the Checkout Session after commit with Idempotency-Key = our
--     session id and our callback stores its id and URL.
--   * api.stripe_webhook verifies Stripe-Signature in C (src/payments/,
--     HMAC-SHA256 over "<t>.<body>", constant-time, several v1 values and
--     several endpoint secrets, tolerance from policy) before it parses the
--     body. A rejected request is audited without its body and answered 400
--     through PostgREST's response.status, so the audit row commits. Events
--     are deduplicated by Stripe event id; a paid Checkout Session becomes one
--     payment (unique by Checkout Session id) and one payment.succeeded, which
--     billing books once by the same id.
--   * Refunds (see 50_refunds.sql): the ledger debit comes first, the Stripe
--     refund intent only once the debit is seen; a refund that fails at Stripe
--     is announced (refund.failed) and reversed in the ledger.
--   * Money is bigint minor units; Stripe's JSON integers are read as such
--     (a float is refused).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('checkout_amount_invalid',   400, 'The amount is outside the allowed top-up range.', 'payments'),
    ('currency_not_supported',    400, 'This currency is not accepted for your account.', 'payments'),
    ('checkout_not_found',        404, 'The checkout session does not exist.', 'payments'),
    ('payment_not_found',         404, 'The payment does not exist.', 'payments'),
    ('payment_not_refundable',    409, 'This payment cannot be refunded.', 'payments'),
    ('refund_exceeds_payment',    409, 'The refund is larger than what is left of the payment.', 'payments'),
    ('refund_exceeds_balance',    409, 'The refund is larger than the account''s balance.', 'payments'),
    ('webhook_signature_invalid', 400, 'The Stripe-Signature header is missing, malformed, outside the time tolerance or does not match.', 'payments'),
    ('webhook_payload_invalid',   400, 'The webhook body is not a Stripe event.', 'payments'),
    ('webhook_payload_too_large', 413, 'The webhook body is too large.', 'payments'),
    ('webhook_not_configured',    500, 'No Stripe webhook endpoint secret is configured.', 'payments');

-- payments.webhook_tolerance_seconds and payments.checkout_min/max_amount are seeded by the core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('payments.currencies', '["usd"]', 'Currencies a top-up may be made in (ISO 4217, lower case); an account''s own currency wins once known.'),
    ('payments.product_name', '"pgcloud credit"', 'Name of the line item on the Stripe Checkout page.'),
    ('payments.success_url', '"https://console.pgcloud.invalid/billing/checkout/success"', 'Where Stripe Checkout sends the user after paying (http or https URL).'),
    ('payments.cancel_url', '"https://console.pgcloud.invalid/billing/checkout/cancelled"', 'Where Stripe Checkout sends the user who cancels (http or https URL).'),
    ('payments.webhook_max_bytes', '262144', 'Largest webhook body accepted (bytes); larger ones are refused before the signature is computed.'),
    ('payments.refund_allow_negative_balance', 'false', 'Whether a refund may take the account''s balance below zero (billing decides against the real balance).');
