-- On Supabase, let signed-in users reach only their own rows through the Data API. Plain PostgreSQL has no `auth`
-- schema or `authenticated` role, so there this migration does nothing (the service itself scopes every query by
-- user_id and connects as the table owner).

DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NOT NULL
        AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')
    THEN
        EXECUTE 'ALTER TABLE public.threads ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE public.turns ENABLE ROW LEVEL SECURITY';
        EXECUTE 'CREATE POLICY threads_owner ON public.threads FOR ALL TO authenticated '
             || 'USING ((select auth.uid()) = user_id) WITH CHECK ((select auth.uid()) = user_id)';
        EXECUTE 'CREATE POLICY turns_owner ON public.turns FOR ALL TO authenticated '
             || 'USING ((select auth.uid()) = user_id) WITH CHECK ((select auth.uid()) = user_id)';
    END IF;
END
$$;
