-- Chat threads and their turns. Thread ids are chosen by the client and scoped to their user.

CREATE TABLE public.threads (
    user_id    uuid        NOT NULL,
    id         text        NOT NULL CHECK (char_length(id) BETWEEN 1 AND 128),
    title      text        CHECK (title IS NULL OR char_length(title) <= 1000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, id)
);

CREATE INDEX threads_user_updated_idx ON public.threads (user_id, updated_at DESC);

CREATE TABLE public.turns (
    id                          uuid        PRIMARY KEY,
    user_id                     uuid        NOT NULL,
    thread_id                   text        NOT NULL,
    seq                         integer     NOT NULL CHECK (seq >= 1),
    question                    text        NOT NULL,
    reply                       text,
    status                      text        NOT NULL DEFAULT 'streaming'
                                            CHECK (status IN ('streaming', 'completed', 'failed', 'interrupted')),
    error                       text,
    model                       text        CHECK (model IS NULL OR char_length(model) <= 200),
    stop_reason                 text        CHECK (stop_reason IS NULL OR char_length(stop_reason) <= 100),
    input_tokens                integer     NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens               integer     NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cache_creation_input_tokens integer     NOT NULL DEFAULT 0 CHECK (cache_creation_input_tokens >= 0),
    cache_read_input_tokens     integer     NOT NULL DEFAULT 0 CHECK (cache_read_input_tokens >= 0),
    started_at                  timestamptz NOT NULL DEFAULT now(),
    first_token_ms              integer     CHECK (first_token_ms IS NULL OR first_token_ms >= 0),
    latency_ms                  integer     CHECK (latency_ms IS NULL OR latency_ms >= 0),
    finished_at                 timestamptz,
    lease_until                 timestamptz,
    idempotency_key             text        CHECK (idempotency_key IS NULL OR char_length(idempotency_key) BETWEEN 1 AND 255),
    user_timezone               text        CHECK (user_timezone IS NULL OR char_length(user_timezone) <= 64),
    CONSTRAINT turns_thread_seq_key UNIQUE (user_id, thread_id, seq),
    CONSTRAINT turns_thread_fkey FOREIGN KEY (user_id, thread_id)
        REFERENCES public.threads (user_id, id) ON DELETE CASCADE,
    CONSTRAINT turns_streaming_has_lease CHECK (status <> 'streaming' OR lease_until IS NOT NULL)
);

-- At most one streaming turn per thread: a second concurrent turn fails here and is reported as "thread busy".
CREATE UNIQUE INDEX turns_one_streaming_per_thread
    ON public.turns (user_id, thread_id) WHERE status = 'streaming';

-- A client retry with the same Idempotency-Key finds the first turn instead of creating another.
CREATE UNIQUE INDEX turns_user_idempotency_key
    ON public.turns (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
