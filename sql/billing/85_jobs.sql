-- The accrual runs by itself: the scheduler worker calls billing.accrue()
-- every billing.accrual_interval_seconds (each run charges every complete
-- interval due, so a late or skipped run only delays).

SELECT pgcloud.register_job('billing.accrue', 'billing.accrue(timestamptz)', 'billing.accrual_interval_seconds', 's',
    'The accrual: charges every active allocation for each complete interval (and settles ended ones).');
