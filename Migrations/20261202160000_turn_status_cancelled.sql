-- A turn the user stopped (POST /threads/{id}/cancel) ends as 'cancelled', with the partial reply they saw.
--
-- The status check is widened: the new constraint is added NOT VALID and validated in a second step, so existing rows
-- are checked without holding the table's strongest lock for the scan (they all satisfy it anyway).
ALTER TABLE public.turns DROP CONSTRAINT IF EXISTS turns_status_check;
ALTER TABLE public.turns ADD CONSTRAINT turns_status_check
    CHECK (status IN ('streaming', 'completed', 'failed', 'interrupted', 'cancelled')) NOT VALID;
ALTER TABLE public.turns VALIDATE CONSTRAINT turns_status_check;
