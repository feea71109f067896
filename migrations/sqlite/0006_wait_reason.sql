-- Why a pending delivery waits (missing configuration, a rate limit), as a value of its own rather
-- than a prefix of last_error. Rows written before are converted once; last_error keeps the text
-- without the prefix.
ALTER TABLE deliveries ADD COLUMN wait_reason TEXT;
UPDATE deliveries SET wait_reason = CASE
    WHEN last_error LIKE 'waiting: no github.routes.%' THEN 'no_route'
    WHEN last_error LIKE 'waiting: security tickets%' THEN 'public_security_route'
    WHEN last_error LIKE 'waiting: rate limited%' THEN 'rate_limited'
    -- GitHub is not configured, or no worker for the kind ran: both meant filing was not set up.
    ELSE 'github_not_configured' END,
  last_error = substr(last_error, 10)
WHERE state = 'pending' AND last_error LIKE 'waiting: %';
