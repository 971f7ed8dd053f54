-- A turn's full content (issue 15): every step of a reply that used tools or thinking, in the Messages API's own
-- shape, next to `reply` (the visible text).
--
-- `content` is a JSON array of the messages that follow the question: the assistant's blocks (text, tool_use,
-- thinking with its signature), the user's tool_result blocks, the next assistant step, and so on. It is NULL for a
-- reply of text alone, whose content is exactly `reply` (every turn stored before this migration, and most turns
-- after it): the chat path writes nothing more than before.
--
-- The service rebuilds the history it sends Claude from it, so a tool turn replays exactly (prompt caching holds).
-- begin_turn returns it as one more column, last, so an instance still running the previous code reads the rows it
-- knows and ignores it; finish_turn gains an overload with the content, and the old one stays for such an instance.
ALTER TABLE public.turns ADD COLUMN content jsonb;

DROP FUNCTION agent_service.begin_turn(uuid, text, uuid, text, text, text, float8, int, text);

CREATE FUNCTION agent_service.begin_turn(
    p_user uuid, p_thread text, p_turn uuid, p_question text, p_title text, p_key text, p_lease float8,
    p_history int, p_timezone text)
RETURNS TABLE (
    kind text, created boolean, new_seq int,
    id uuid, user_id uuid, thread_id text, seq int, question text, reply text, status text, error text, model text,
    stop_reason text, input_tokens int, output_tokens int, cache_creation_input_tokens int,
    cache_read_input_tokens int, started_at text, first_token_ms int, latency_ms int, finished_at text,
    idempotency_key text, user_timezone text, content text)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_created boolean;
    v_seq int;
BEGIN
    IF p_key IS NOT NULL THEN
        RETURN QUERY
            SELECT 'duplicate'::text, NULL::boolean, NULL::int, d.id, d.user_id, d.thread_id, d.seq, d.question,
                d.reply, d.status, d.error, d.model, d.stop_reason, d.input_tokens, d.output_tokens,
                d.cache_creation_input_tokens, d.cache_read_input_tokens, extract(epoch FROM d.started_at)::text,
                d.first_token_ms, d.latency_ms, extract(epoch FROM d.finished_at)::text, d.idempotency_key,
                d.user_timezone, d.content::text
            FROM turns d WHERE d.user_id = p_user AND d.idempotency_key = p_key;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;

    INSERT INTO threads AS th (user_id, id, title) VALUES (p_user, p_thread, p_title)
    ON CONFLICT ON CONSTRAINT threads_pkey DO UPDATE SET updated_at = now()
    RETURNING (th.xmax = 0) INTO v_created;

    RETURN QUERY
        WITH r AS (
            UPDATE turns t SET status = 'interrupted', error = 'the lease expired before the reply finished',
                finished_at = now(), lease_until = NULL
            WHERE t.user_id = p_user AND t.thread_id = p_thread AND t.status = 'streaming' AND t.lease_until < now()
            RETURNING t.id)
        SELECT 'recovered'::text, NULL::boolean, NULL::int, r.id, NULL::uuid, NULL::text, NULL::int, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::int, NULL::int, NULL::int, NULL::int,
            NULL::text, NULL::int, NULL::int, NULL::text, NULL::text, NULL::text, NULL::text
        FROM r;

    INSERT INTO turns AS t (id, user_id, thread_id, seq, question, status, lease_until, idempotency_key, user_timezone)
    VALUES (
        p_turn, p_user, p_thread,
        (SELECT coalesce(max(x.seq), 0) + 1 FROM turns x WHERE x.user_id = p_user AND x.thread_id = p_thread),
        p_question, 'streaming', now() + p_lease * interval '1 second', p_key, p_timezone)
    RETURNING t.seq INTO v_seq;

    RETURN QUERY
        SELECT 'started'::text, v_created, v_seq, NULL::uuid, NULL::uuid, NULL::text, NULL::int, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::int, NULL::int, NULL::int, NULL::int,
            NULL::text, NULL::int, NULL::int, NULL::text, NULL::text, NULL::text, NULL::text;

    RETURN QUERY
        SELECT 'history'::text, NULL::boolean, NULL::int, h.id, h.user_id, h.thread_id, h.seq, h.question, h.reply,
            h.status, h.error, h.model, h.stop_reason, h.input_tokens, h.output_tokens,
            h.cache_creation_input_tokens, h.cache_read_input_tokens, extract(epoch FROM h.started_at)::text,
            h.first_token_ms, h.latency_ms, extract(epoch FROM h.finished_at)::text, h.idempotency_key,
            h.user_timezone, h.content::text
        FROM (
            SELECT * FROM turns y
            WHERE y.user_id = p_user AND y.thread_id = p_thread AND y.id <> p_turn
            ORDER BY y.seq DESC LIMIT p_history) h
        ORDER BY h.seq;
END
$$;

CREATE FUNCTION agent_service.finish_turn(
    p_turn uuid, p_user uuid, p_reply text, p_status text, p_error text, p_model text, p_stop_reason text,
    p_input int, p_output int, p_cache_write int, p_cache_read int, p_first_token_ms int, p_latency_ms int,
    p_from_interrupted boolean, p_content jsonb)
RETURNS TABLE (written boolean, present boolean)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    v_thread text;
BEGIN
    UPDATE turns t SET reply = p_reply, status = p_status, error = p_error, model = p_model,
        stop_reason = p_stop_reason, input_tokens = p_input, output_tokens = p_output,
        cache_creation_input_tokens = p_cache_write, cache_read_input_tokens = p_cache_read,
        first_token_ms = p_first_token_ms, latency_ms = p_latency_ms, finished_at = now(), lease_until = NULL,
        content = p_content
    WHERE t.id = p_turn AND t.user_id = p_user
        AND (t.status = 'streaming' OR (p_from_interrupted AND t.status = 'interrupted'))
    RETURNING t.thread_id INTO v_thread;
    IF FOUND THEN
        UPDATE threads th SET updated_at = now() WHERE th.user_id = p_user AND th.id = v_thread;
        RETURN QUERY SELECT true, true;
    ELSE
        RETURN QUERY SELECT false, EXISTS (SELECT 1 FROM turns z WHERE z.id = p_turn AND z.user_id = p_user);
    END IF;
END
$$;

REVOKE ALL ON FUNCTION agent_service.begin_turn(uuid, text, uuid, text, text, text, float8, int, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION agent_service.finish_turn(uuid, uuid, text, text, text, text, text, int, int, int, int, int, int, boolean, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION agent_service.begin_turn(uuid, text, uuid, text, text, text, float8, int, text) TO agent_service_user;
GRANT EXECUTE ON FUNCTION agent_service.finish_turn(uuid, uuid, text, text, text, text, text, int, int, int, int, int, int, boolean, jsonb) TO agent_service_user;
