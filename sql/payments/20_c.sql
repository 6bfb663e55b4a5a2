-- C: webhook signature check and form encoding (src/payments/).

CREATE FUNCTION payments.verify_signature(body text, signature text, tolerance_seconds integer,
                                          OUT verdict text, OUT signed_at bigint, OUT secret_index integer)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_payments_verify_signature';
COMMENT ON FUNCTION payments.verify_signature(text, text, integer) IS 'Verifies a Stripe-Signature header over the raw body (C): HMAC-SHA256 of "<t>.<body>" with each secret of pgcloud.stripe_webhook_secrets, compared in constant time with every v1 value; then |now - t| <= tolerance_seconds. verdict is ok, missing_header, header_too_long, malformed_header, no_v1_signature, no_secrets_configured, signature_mismatch, timestamp_too_old or timestamp_in_future; signed_at is t; secret_index the 1-based secret that matched.';

CREATE FUNCTION payments.form_encode(names text[], vals text[]) RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 'pgcloud_payments_form_encode';
COMMENT ON FUNCTION payments.form_encode(text[], text[]) IS 'An application/x-www-form-urlencoded body from names and values (C; NULL values are left out), e.g. for Stripe''s bracket notation metadata[k]=v.';
