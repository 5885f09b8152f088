-- cryptoworker schema, version 2: where a payment request's `confirmations` came from.
-- Documented in docs/database.md (`payment_request_applied`).
--
-- `payment_requests.confirmations` follows the newest `new_payment` that carried a count, which
-- may be older than the newest one applied (an event without a count leaves the column as it
-- is). Its (epoch, seq) is recorded here, beside the newest event applied, so replays and
-- batches committed out of order never put an older count back.
ALTER TABLE payment_request_applied
    ADD COLUMN IF NOT EXISTS confirmations_epoch text COLLATE "C" NULL,
    ADD COLUMN IF NOT EXISTS confirmations_seq bigint NULL;
