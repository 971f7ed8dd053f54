-- Full-text search over a user's own turns, for the built-in search_memory tool (issue 15).
--
-- A stored generated tsvector over the question (weight A) and the reply (weight B), with a GIN index. Postgres keeps
-- it current on every insert and update of a turn, so no code path can forget it.
--
-- The 'simple' configuration, not 'english': users write in any language (German and English in the same account is
-- ordinary), and 'english' would stem and drop stop words for every one of them, mangling names and non-English
-- words; what memory search looks for is mostly facts (names, places, numbers, titles) that 'simple' keeps as they are.
-- Only lower-casing applies, so "Berlin" finds "berlin". The price is no stemming: "running" does not find "ran".
--
-- The inputs are cut (question at 20,000, reply at 100,000 characters) so a huge reply can never exceed the tsvector
-- size limit (1 MB) and fail the write that stores it: storing a turn matters more than indexing its tail.
--
-- RLS is unchanged: the column is part of turns, so the existing policies apply to it (the service role sees only the
-- user's rows; the Data API's authenticated users see the column of their own rows only, anon nothing).
--
-- Only turns that memory search can return (completed, cancelled) get a vector; the others are NULL. So beginning a
-- turn (a streaming row) and its lease renewals (which checkpoint the partial reply) parse nothing and add nothing to
-- the index: the text is parsed once, when the turn ends.
ALTER TABLE public.turns ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    CASE WHEN status IN ('completed', 'cancelled') THEN
        setweight(to_tsvector('simple'::regconfig, left(coalesce(question, ''), 20000)), 'A')
        || setweight(to_tsvector('simple'::regconfig, left(coalesce(reply, ''), 100000)), 'B')
    END
) STORED;

CREATE INDEX turns_search_vector_idx ON public.turns USING gin (search_vector);
