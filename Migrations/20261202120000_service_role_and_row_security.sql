-- Defence in depth: the database itself keeps users apart.
--
-- 1. The service runs each request's statements inside a transaction that switches to the no-login role
--    agent_service_user (set_config('role', ..., true)) and puts the verified user id into the transaction-local
--    setting request.jwt.claims (the same setting Supabase's PostgREST and auth.uid() read). Policies for that role
--    admit only that user's rows, so even a query that forgets its WHERE user_id = ... sees nothing of anyone else.
--    Everything is transaction-local, which is what transaction poolers (Supabase's port 6543, PgBouncer) carry.
-- 2. On Supabase, users reaching these tables through the Data API (PostgREST, anon key plus their own token) may
--    only read and delete their own rows: no INSERT or UPDATE (forged assistant history, or a planted 'streaming'
--    row that would block a thread), and anon gets nothing.
-- 3. question and reply get length limits.
--
-- The table owner (the login that runs migrations and the service) is not subject to RLS; the service uses that
-- only for work that spans users (marking expired turns interrupted at shutdown and by the sweeper).

DO $$
BEGIN
    -- Roles belong to the cluster, not the database: another database of the same cluster may create it at the same
    -- moment (the second CREATE then fails with a unique violation once the first commits).
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'agent_service_user') THEN
        BEGIN
            CREATE ROLE agent_service_user NOLOGIN NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The login running this migration (and the service) must be able to switch to it. A superuser always can.
    IF NOT pg_has_role(current_user, 'agent_service_user', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT agent_service_user TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO agent_service_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.threads, public.turns TO agent_service_user;

ALTER TABLE public.threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.turns ENABLE ROW LEVEL SECURITY;

-- (select ...) makes the setting an initPlan, read once per statement rather than once per row.
CREATE POLICY threads_service_user ON public.threads FOR ALL TO agent_service_user
    USING (user_id = (SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid)
    WITH CHECK (user_id = (SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);
CREATE POLICY turns_service_user ON public.turns FOR ALL TO agent_service_user
    USING (user_id = (SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid)
    WITH CHECK (user_id = (SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid);

-- Supabase's Data API roles (absent on plain PostgreSQL, where this block does nothing).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        EXECUTE 'REVOKE ALL ON public.threads, public.turns FROM anon';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        -- The first wave's policies allowed every operation; replace them with read and delete only.
        EXECUTE 'DROP POLICY IF EXISTS threads_owner ON public.threads';
        EXECUTE 'DROP POLICY IF EXISTS turns_owner ON public.turns';
        EXECUTE 'REVOKE ALL ON public.threads, public.turns FROM authenticated';
        EXECUTE 'GRANT SELECT, DELETE ON public.threads, public.turns TO authenticated';
        EXECUTE 'CREATE POLICY threads_owner_select ON public.threads FOR SELECT TO authenticated '
             || 'USING (user_id = (SELECT nullif(current_setting(''request.jwt.claims'', true), '''')::jsonb ->> ''sub'')::uuid)';
        EXECUTE 'CREATE POLICY threads_owner_delete ON public.threads FOR DELETE TO authenticated '
             || 'USING (user_id = (SELECT nullif(current_setting(''request.jwt.claims'', true), '''')::jsonb ->> ''sub'')::uuid)';
        EXECUTE 'CREATE POLICY turns_owner_select ON public.turns FOR SELECT TO authenticated '
             || 'USING (user_id = (SELECT nullif(current_setting(''request.jwt.claims'', true), '''')::jsonb ->> ''sub'')::uuid)';
        -- A reply that is still streaming belongs to the service until it ends.
        EXECUTE 'CREATE POLICY turns_owner_delete ON public.turns FOR DELETE TO authenticated '
             || 'USING (user_id = (SELECT nullif(current_setting(''request.jwt.claims'', true), '''')::jsonb ->> ''sub'')::uuid '
             || 'AND status <> ''streaming'')';
    END IF;
END
$$;

-- NOT VALID: enforced for every new or updated row without scanning (and locking) existing ones.
ALTER TABLE public.turns
    ADD CONSTRAINT turns_question_length CHECK (char_length(question) <= 1000000) NOT VALID,
    ADD CONSTRAINT turns_reply_length CHECK (reply IS NULL OR char_length(reply) <= 2000000) NOT VALID;
