-- The screen's shared state (greylist, recipient verification cache):
-- written by the screen's PostgreSQL store.
SELECT 1;
