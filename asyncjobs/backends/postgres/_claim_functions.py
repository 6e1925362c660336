"""Migration step 4 of the PostgreSQL schema: a flow-control claim as one server-side call.

``_schema.py`` appends :data:`CLAIM_FUNCTIONS_STEP` to its migrations; it lives
here because the PL/pgSQL is longer than the rest of the schema. The
functions are called by ``_flow.py`` (``claim_limited``); ``{s}`` is the quoted
schema name, as in every migration step. Never edit a released step: append.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CLAIM_FUNCTIONS_STEP"]

CLAIM_FUNCTIONS_STEP: Final[tuple[str, ...]] = (
    # A limited claim as one call (``_flow.py``): the same steps the claim took as
    # six or seven statements of one transaction, run next to the data, so a claim
    # costs one round trip, as a plain claim does. Three functions: reading a rate
    # window, leasing the chosen jobs, and the claim that calls them. All are
    # VOLATILE (the default): under READ COMMITTED each of their statements reads
    # the latest commits, as each statement of the old transaction did.
    #
    # A rate window read at a claim: its claims as ``rate_counts`` holds them, less
    # those it deletes (the trigger takes them off the row after the statement), and
    # the oldest claim left (one seek in ``rate_claims_window``). Claims at or
    # before *window_start* have left: the delete starts at ``pruned_to`` (no claim
    # of the window is older), which it raises to *window_start*, so it never steps
    # over the index entries of the claims deleted before.
    """
    CREATE FUNCTION {s}.read_rate_window(
        window_name text, window_start float8, OUT claims bigint, OUT oldest float8
    ) LANGUAGE plpgsql AS $$
    BEGIN
        WITH c AS MATERIALIZED (
            SELECT n, pruned_to FROM {s}.rate_counts WHERE name = window_name
        ),
        d AS (
            DELETE FROM {s}.rate_claims WHERE name = window_name
            AND at >= coalesce((SELECT pruned_to FROM c), '-infinity')
            AND at <= window_start
            RETURNING 1
        ),
        p AS (
            UPDATE {s}.rate_counts SET pruned_to = window_start
            WHERE name = window_name AND pruned_to < window_start
            AND EXISTS (SELECT FROM d)
        )
        SELECT coalesce((SELECT n FROM c), 0) - (SELECT count(*) FROM d),
            (SELECT min(at) FROM {s}.rate_claims WHERE name = window_name AND at > window_start)
        INTO claims, oldest;
    END
    $$
    """,
    # Lease the jobs *seqs* that are still queued (a plain claim, which takes no
    # advisory lock, may have taken one since they were chosen), move the queue's
    # partition round on, and count each job leased at *claim_at* in the window
    # *queue_window* (NULL: none) and in its name's window when its name is one of
    # *job_windows*. The jobs are found by seq (the primary key); ``state || ''``
    # keeps the planner off the partial indexes on ``state = 'queued'``, which
    # stale statistics (a burst of jobs since the last analyze) made it scan whole.
    """
    CREATE FUNCTION {s}.lease_limited(
        seqs bigint[], queue_name text, claim_at float8, lease float8, worker text,
        queue_window text, job_windows text[]
    ) RETURNS {s}.jobs[] LANGUAGE plpgsql AS $$
    DECLARE
        leased {s}.jobs[];
    BEGIN
        WITH u AS (
            UPDATE {s}.jobs AS j SET state = 'running', attempts = j.attempts + 1,
                lease_token = replace(gen_random_uuid()::text, '-', ''),
                lease_expires_at = claim_at + lease, worker_id = worker,
                started_at = NULL, progress = NULL, progress_message = NULL
            WHERE j.seq = ANY(seqs) AND j.state || '' = 'queued'
            RETURNING j AS job, j.round
        ),
        r AS (
            UPDATE {s}.queues AS qq SET round = m.round
            FROM (SELECT max(u.round) AS round FROM u) AS m
            WHERE qq.name = queue_name AND qq.round < m.round
        )
        SELECT array_agg(u.job) INTO leased FROM u;
        -- A statement apart, run only for a window: an insert of no rows still
        -- fires the statement triggers on rate_claims.
        IF queue_window IS NOT NULL OR cardinality(job_windows) > 0 THEN
            INSERT INTO {s}.rate_claims (name, at)
            SELECT w.name, claim_at FROM unnest(leased) AS u CROSS JOIN LATERAL (
                SELECT queue_window WHERE queue_window IS NOT NULL
                UNION ALL SELECT 'job:' || u.name WHERE u.name = ANY(job_windows)
            ) AS w (name);
        END IF;
        RETURN leased;
    END
    $$
    """,
    # The claim: up to *wanted* due jobs of *queue_name* within the limits given
    # (NULL: no such limit; *job_names* with their rates, in *job_limits* and
    # *job_pers*), for *worker*, leased for *lease* seconds. *clock* is the
    # caller's clock (NULL: the server's). It returns the jobs leased (NULL:
    # none) in no particular order and, when a limit held back a due job and
    # fewer than *wanted* were leased, the first limit that did (*held_by*) and
    # when a rate window lets the next job in (*retry_at*, NULL when only a
    # running job's end can free a slot).
    """
    CREATE FUNCTION {s}.claim_limited(
        locks text[], clock float8, queue_name text, wanted bigint, worker text,
        lease float8, global_limit bigint, partition_limit bigint,
        rate_limit bigint, rate_per float8,
        job_names text[], job_limits bigint[], job_pers float8[],
        OUT claimed {s}.jobs[], OUT held_by text, OUT retry_at float8
    ) LANGUAGE plpgsql AS $$
    DECLARE
        k text;
        claim_at float8;
        cap bigint;
        free bigint;
        held text;  -- the first limit that held a due job back
        retry float8;  -- the earliest time a window that held a job back opens
        queue_claims bigint;  -- the queue's rate window, with this claim's jobs
        queue_oldest float8;
        -- Running jobs per partition, with this claim's jobs (arrays, not jsonb:
        -- an element is updated in place, where a jsonb would be copied whole).
        partitions text[];
        partition_running bigint[];
        slot integer;
        window_claims bigint[] := ARRAY[]::bigint[];  -- per job name (NULL: not read)
        window_oldest float8[] := ARRAY[]::float8[];
        i integer;
        w record;
        full_partitions text[] := ARRAY[]::text[];
        full_names text[] := ARRAY[]::text[];
        chosen bigint[] := ARRAY[]::bigint[];
        skipped boolean := false;
        more_due boolean;  -- whether a due job was left unexamined (NULL: unknown)
        page_size bigint;
        fetched integer;
        candidate record;
        after_priority integer;
        after_round bigint;
        after_due float8;
        after_seq bigint;
    BEGIN
        -- Limited claims of one queue, and of each rate-limited job name, take turns
        -- on transaction-level advisory locks. The caller gives the keys
        -- (``_flow.lock_keys``) sorted: the keys and order of the asyncjobs before
        -- schema version 4, so old and new processes exclude each other (and never
        -- deadlock) during an upgrade.
        FOREACH k IN ARRAY locks LOOP
            PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
        END LOOP;
        -- A running job of a queue claimed under a concurrency limit wakes the
        -- queue's waiters in every process when it ends (``_lifecycle.py``).
        -- Read first: ON CONFLICT locks the queue's row even when it changes
        -- nothing, a write at every claim.
        IF (global_limit IS NOT NULL OR partition_limit IS NOT NULL)
            AND NOT EXISTS (SELECT FROM {s}.queues WHERE name = queue_name AND limited)
        THEN
            INSERT INTO {s}.queues AS qq (name, limited) VALUES (queue_name, true)
            ON CONFLICT (name) DO UPDATE SET limited = true WHERE NOT qq.limited;
        END IF;
        -- The clock is read once the locks are held, so the windows are judged by
        -- a time no earlier than the previous claim's.
        claim_at := coalesce(clock, extract(epoch FROM clock_timestamp())::float8);
        IF rate_limit IS NOT NULL THEN
            SELECT * INTO w
            FROM {s}.read_rate_window('queue:' || queue_name, claim_at - rate_per);
            queue_claims := w.claims;
            queue_oldest := w.oldest;
        END IF;
        IF wanted <= 0 OR EXISTS (SELECT FROM {s}.queues WHERE name = queue_name AND paused)
        THEN
            RETURN;
        END IF;

        -- How many the queue-wide limits let in; the later limit is the one reported.
        cap := wanted;
        IF global_limit IS NOT NULL THEN
            free := global_limit - (
                SELECT count(*) FROM {s}.jobs WHERE state = 'running' AND queue = queue_name
            );
            IF free < cap THEN
                cap := greatest(free, 0);
                held := 'global_concurrency';
            END IF;
        END IF;
        IF rate_limit IS NOT NULL THEN
            free := rate_limit - queue_claims;
            IF free < cap THEN
                cap := greatest(free, 0);
                held := 'rate_limit';
                IF free <= 0 THEN
                    retry := queue_oldest + rate_per;
                END IF;
            END IF;
        END IF;
        IF partition_limit IS NOT NULL THEN
            SELECT coalesce(array_agg(r.partition), ARRAY[]::text[]),
                coalesce(array_agg(r.n), ARRAY[]::bigint[])
            INTO partitions, partition_running FROM (
                SELECT partition, count(*) AS n FROM {s}.jobs
                WHERE state = 'running' AND queue = queue_name AND partition IS NOT NULL
                GROUP BY partition
            ) AS r;
        END IF;

        -- Due jobs in claim order, a page at a time; a job a partition or job-rate
        -- limit holds back is skipped, so later ones may still be taken, and the
        -- partitions and names found full are left out of the next pages. With no
        -- such limit, the first cap jobs are the claim and one more tells whether a
        -- due job is left.
        page_size := CASE WHEN partition_limit IS NOT NULL OR cardinality(job_names) > 0
            THEN 256 ELSE cap + 1 END;
        WHILE cardinality(chosen) < cap LOOP
            fetched := 0;
            FOR candidate IN
                SELECT seq, name, partition, priority, round, due_at FROM {s}.jobs
                WHERE state = 'queued' AND queue = queue_name AND due_at <= claim_at
                AND (after_seq IS NULL OR (priority, round, due_at, seq)
                    > (after_priority, after_round, after_due, after_seq))
                AND (partition IS NULL OR NOT partition = ANY(full_partitions))
                AND NOT name = ANY(full_names)
                ORDER BY priority, round, due_at, seq LIMIT page_size
            LOOP
                fetched := fetched + 1;
                IF cardinality(chosen) >= cap THEN
                    more_due := true;
                    EXIT;
                END IF;
                after_priority := candidate.priority;
                after_round := candidate.round;
                after_due := candidate.due_at;
                after_seq := candidate.seq;
                slot := NULL;
                IF partition_limit IS NOT NULL AND candidate.partition IS NOT NULL THEN
                    slot := array_position(partitions, candidate.partition);
                    IF slot IS NULL THEN  -- none of it running
                        partitions := partitions || candidate.partition;
                        partition_running := partition_running || 0::bigint;
                        slot := cardinality(partitions);
                    END IF;
                    IF partition_running[slot] >= partition_limit THEN
                        skipped := true;
                        full_partitions := full_partitions || candidate.partition;
                        held := coalesce(held, 'partition_concurrency');
                        CONTINUE;
                    END IF;
                END IF;
                i := array_position(job_names, candidate.name);
                IF i IS NOT NULL THEN
                    IF window_claims[i] IS NULL THEN
                        SELECT * INTO w FROM {s}.read_rate_window(
                            'job:' || candidate.name, claim_at - job_pers[i]
                        );
                        window_claims[i] := w.claims;
                        window_oldest[i] := w.oldest;
                    END IF;
                    IF window_claims[i] >= job_limits[i] THEN
                        skipped := true;
                        full_names := full_names || candidate.name;
                        held := coalesce(held, 'job_rate_limit');
                        retry := least(retry, window_oldest[i] + job_pers[i]);
                        CONTINUE;
                    END IF;
                    window_claims[i] := window_claims[i] + 1;
                    window_oldest[i] := coalesce(window_oldest[i], claim_at);
                END IF;
                chosen := chosen || candidate.seq;
                IF slot IS NOT NULL THEN
                    partition_running[slot] := partition_running[slot] + 1;
                END IF;
                IF rate_limit IS NOT NULL THEN
                    queue_claims := queue_claims + 1;
                    queue_oldest := coalesce(queue_oldest, claim_at);
                END IF;
            END LOOP;
            IF more_due OR fetched < page_size THEN
                more_due := coalesce(more_due, false);
                EXIT;
            END IF;
        END LOOP;
        IF more_due IS NULL AND NOT skipped AND cardinality(chosen) < wanted THEN
            -- Stopped at the cap at a page's end (or before any): is a due job left?
            more_due := EXISTS (
                SELECT FROM {s}.jobs
                WHERE state = 'queued' AND queue = queue_name AND due_at <= claim_at
                AND (after_seq IS NULL OR (priority, round, due_at, seq)
                    > (after_priority, after_round, after_due, after_seq))
            );
        END IF;

        IF cardinality(chosen) > 0 THEN
            claimed := {s}.lease_limited(
                chosen, queue_name, claim_at, lease, worker,
                CASE WHEN rate_limit IS NOT NULL THEN 'queue:' || queue_name END, job_names
            );
        END IF;
        IF coalesce(cardinality(claimed), 0) >= wanted
            OR NOT (skipped OR coalesce(more_due, false))
        THEN
            RETURN;  -- nothing due was held back
        END IF;
        IF cap < wanted AND rate_limit IS NOT NULL AND queue_claims >= rate_limit THEN
            retry := least(retry, queue_oldest + rate_per);
        END IF;
        held_by := held;
        retry_at := retry;
    END
    $$
    """,
)
