"""Realistic test data: several schemas, sequences, large objects, unicode, indexes, constraints, views;
Redis strings, hashes, lists, sets, sorted sets and streams, with and without TTLs."""

from __future__ import annotations

from typing import Any

PG_SCHEMA = r"""
CREATE SCHEMA app;
CREATE SCHEMA audit;
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 7;
CREATE TABLE app.users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE CHECK (position('@' in email) > 1),
    name text NOT NULL,
    profile jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE app.executions (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES app.users(id) ON DELETE CASCADE,
    workflow text NOT NULL,
    status text NOT NULL CHECK (status IN ('success', 'failure', 'cancelled', 'timeout')),
    cost numeric(12, 4) NOT NULL DEFAULT 0,
    ratio double precision,
    invoice bigint DEFAULT nextval('app.invoice_no'),
    payload bytea,
    tags text[]
);
CREATE INDEX executions_user_status ON app.executions (user_id, status);
CREATE INDEX executions_workflow_lower ON app.executions (lower(workflow));
CREATE TABLE audit.events (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    actor bigint REFERENCES app.users(id),
    detail text,
    doc oid
);
CREATE VIEW app.user_costs AS
    SELECT u.email, sum(e.cost) AS total FROM app.users u JOIN app.executions e ON e.user_id = u.id GROUP BY u.email;
CREATE MATERIALIZED VIEW audit.daily AS SELECT date_trunc('day', at) AS day, count(*) AS n FROM audit.events GROUP BY 1;
CREATE TABLE public.no_pk (k text, v int);

INSERT INTO app.users (email, name, profile, created_at)
SELECT 'user' || i || '@example.com',
       (ARRAY['Zoë Ångström', '李小龙', 'Παναγιώτης', 'José Ñúñez', 'Москва 🚀', 'emoji 👩‍💻✨'])[1 + i % 6] || ' #' || i,
       jsonb_build_object('lang', (ARRAY['de', 'zh', 'el', 'es', 'ru'])[1 + i % 5], 'n', i),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '37 minutes'
FROM generate_series(1, 500) i;
INSERT INTO app.executions (user_id, workflow, status, cost, ratio, payload, tags)
SELECT 1 + i % 500, 'workflow-' || (i % 13), (ARRAY['success', 'failure', 'cancelled', 'timeout'])[1 + i % 4],
       (i % 1000) / 7.0, i / 3.0, decode(md5(i::text), 'hex'), ARRAY['t' || i % 3, 'ü' || i % 5]
FROM generate_series(1, 5000) i;
INSERT INTO audit.events (at, actor, detail, doc)
SELECT timestamptz '2026-02-01 12:00:00+00' + i * interval '1 second', 1 + i % 500, repeat('détail ', 1 + i % 20),
       CASE WHEN i % 250 = 0 THEN lo_from_bytea(0, convert_to('large object ' || i || ' ✓', 'UTF8')) END
FROM generate_series(1, 2000) i;
REFRESH MATERIALIZED VIEW audit.daily;
INSERT INTO public.no_pk SELECT 'k' || i, i FROM generate_series(1, 100) i;
SELECT setval('app.invoice_no', 123456);
"""

# One query whose output fingerprints everything above (compared before and after a restore).
PG_FINGERPRINT = r"""
SELECT 'users', count(*), md5(string_agg(u::text, '|' ORDER BY id)) FROM app.users u
UNION ALL SELECT 'executions', count(*), md5(string_agg(e::text, '|' ORDER BY id)) FROM app.executions e
UNION ALL SELECT 'events', count(*), md5(string_agg(a::text, '|' ORDER BY id)) FROM audit.events a
UNION ALL SELECT 'daily', count(*), md5(string_agg(d::text, '|' ORDER BY day)) FROM audit.daily d
UNION ALL SELECT 'no_pk', count(*), md5(string_agg(p::text, '|' ORDER BY k)) FROM public.no_pk p
UNION ALL SELECT 'view', count(*), md5(string_agg(v::text, '|' ORDER BY email)) FROM app.user_costs v
UNION ALL SELECT 'lo', count(*), md5(string_agg(encode(lo_get(oid), 'hex'), '|' ORDER BY oid)) FROM pg_largeobject_metadata
UNION ALL SELECT 'seq', last_value, is_called::text FROM app.invoice_no
UNION ALL SELECT 'identity', (SELECT last_value FROM audit.events_id_seq), ''
UNION ALL SELECT 'indexes', count(*), string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname IN ('app', 'audit')
UNION ALL SELECT 'constraints', count(*), string_agg(conname, ',' ORDER BY conname) FROM pg_constraint c
    JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('app', 'audit');
"""


def load_redis(r: Any) -> None:
    """Every data type, with and without TTLs, binary and unicode values."""
    pipe = r.pipeline()
    for i in range(300):
        pipe.set(f"session:{i}", f"token-{i}-ü✓".encode())
        if i % 3 == 0:
            pipe.expire(f"session:{i}", 3600 + i)
    pipe.set("bin:blob", bytes(range(256)) * 10)
    for i in range(50):
        pipe.hset(f"user:{i}", mapping={"name": f"Zoë {i}", "plan": "pro" if i % 2 else "free", "n": i})
    pipe.expire("user:7", 7200)
    pipe.rpush("queue:jobs", *[f"job-{i}" for i in range(200)])
    pipe.sadd("set:tags", *[f"tag-{i}" for i in range(100)])
    pipe.zadd("zset:leaderboard", {f"player-{i}": i * 1.5 for i in range(100)})
    pipe.pexpire("zset:leaderboard", 86_400_000)
    for i in range(100):
        pipe.xadd("stream:events", {"type": "exec", "n": str(i), "msg": "Москва"})
    pipe.execute()
    r.xgroup_create("stream:events", "workers", id="0")


def redis_value(r: Any, key: bytes) -> Any:
    """A key's value in a form that does not depend on hash-table order."""
    kind = r.type(key)
    if kind == b"string":
        return r.get(key)
    if kind == b"hash":
        return sorted(r.hgetall(key).items())
    if kind == b"list":
        return r.lrange(key, 0, -1)
    if kind == b"set":
        return sorted(r.smembers(key))
    if kind == b"zset":
        return r.zrange(key, 0, -1, withscores=True)
    if kind == b"stream":
        groups = [(g["name"], g["last-delivered-id"]) for g in r.xinfo_groups(key)]
        return [r.xrange(key), groups]
    raise AssertionError(f"unexpected type {kind!r} of {key!r}")


def redis_fingerprint(r: Any) -> dict[bytes, tuple[bytes, Any, bool]]:
    """key -> (type, value, has a TTL) for every key."""
    return {key: (r.type(key), redis_value(r, key), r.pttl(key) > 0) for key in r.scan_iter(count=1000)}


# Triggers and row-level security on the realistic schema: what a failed `pg_restore --clean` used to strip.
PG_LIVE_EXTRAS = r"""
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := NEW.name; RETURN NEW; END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON app.users FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE app.executions ENABLE ROW LEVEL SECURITY;
CREATE POLICY positive_users ON app.executions USING (user_id > 0);
"""

# Counts of the objects a damaged database loses first; compared with PG_FINGERPRINT before and after.
PG_OBJECT_COUNTS = r"""
SELECT 'indexes', count(*) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT 'triggers', count(*) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'policies', count(*) FROM pg_policies
UNION ALL SELECT 'rls tables', count(*) FROM pg_class WHERE relrowsecurity
UNION ALL SELECT 'constraints', count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT 'tables', count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
UNION ALL SELECT 'large objects', count(*) FROM pg_largeobject_metadata;
"""

# Every PostgreSQL feature the platform may use, with names that need quoting (spaces, quotes, dots,
# capitals): the drill must pass on it. Contrib extensions from postgresql-contrib (15) and postgresql-17.
PG_FEATURES = r'''
CREATE EXTENSION pgcrypto;
CREATE EXTENSION citext;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA "Sales Dept";
CREATE SCHEMA "we.ird";
CREATE TYPE "Sales Dept".mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN "Sales Dept".email AS citext CHECK (VALUE LIKE '%@%');
CREATE TABLE "Sales Dept"."My Table" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "Customer ""Name""" text NOT NULL,
    "e.mail" "Sales Dept".email,
    mood "Sales Dept".mood NOT NULL,
    price numeric(10, 2) NOT NULL,
    qty integer NOT NULL,
    total numeric GENERATED ALWAYS AS (price * qty) STORED,
    digest bytea GENERATED ALWAYS AS (digest("Customer ""Name""", 'sha256')) STORED,
    tags text[],
    doc jsonb,
    ratio double precision,
    at timestamptz NOT NULL
);
CREATE INDEX "My Table name trgm" ON "Sales Dept"."My Table" USING gin ("Customer ""Name""" gin_trgm_ops);
ALTER TABLE "Sales Dept"."My Table" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "Sales Dept"."My Table" FORCE ROW LEVEL SECURITY;
CREATE POLICY "happy only" ON "Sales Dept"."My Table" FOR SELECT USING (mood = 'happy');
CREATE TABLE "Sales Dept".events (
    id integer GENERATED BY DEFAULT AS IDENTITY,
    day date NOT NULL,
    "Value" double precision,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE TABLE "Sales Dept"."events 2025" PARTITION OF "Sales Dept".events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "Sales Dept".events_2026 PARTITION OF "Sales Dept".events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE UNLOGGED TABLE public."Cache.Entries" (k text PRIMARY KEY, v text);
CREATE TABLE "we.ird"."a ""b"".c" ("X" integer, "y z" text, "Ünï" citext);
CREATE TABLE public."UPPER" ("ID" integer, secret bytea DEFAULT gen_random_bytes(16));
CREATE MATERIALIZED VIEW "Sales Dept"."Mood Counts" AS SELECT mood, count(*) AS n FROM "Sales Dept"."My Table" GROUP BY mood;

INSERT INTO "Sales Dept"."My Table" ("Customer ""Name""", "e.mail", mood, price, qty, tags, doc, ratio, at)
SELECT (ARRAY['Zoë "Z" Ångström', E'tab\there', E'new\nline', 'back\slash', 'O''Brien', '李小龙 🚀'])[1 + i % 6] || ' ' || i,
       'User' || i || '@Example.com', (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::"Sales Dept".mood,
       (i % 997) / 7.0, i % 13, ARRAY['t' || i % 4, NULL], jsonb_build_object('n', i, 'k', ARRAY[i, i * 2]),
       i / 7.0, timestamptz '2026-03-01 00:00:00+00' + i * interval '17 minutes 3.25 seconds'
FROM generate_series(1, 1500) i;
INSERT INTO "Sales Dept".events (day, "Value")
SELECT date '2025-06-01' + (i % 400), i * 0.1 FROM generate_series(1, 3000) i;
INSERT INTO public."Cache.Entries" SELECT 'k' || i, repeat('v', i % 50) FROM generate_series(1, 300) i;
INSERT INTO "we.ird"."a ""b"".c" SELECT i, 'row ' || i, 'MiXeD ' || i FROM generate_series(1, 250) i;
INSERT INTO public."UPPER" ("ID") SELECT i FROM generate_series(1, 100) i;
SELECT lo_from_bytea(0, convert_to('feature large object ' || i, 'UTF8')) FROM generate_series(1, 3) i;
REFRESH MATERIALIZED VIEW "Sales Dept"."Mood Counts";
'''

# Fingerprint of PG_FEATURES (as a superuser, who bypasses row-level security).
PG_FEATURES_FINGERPRINT = r"""
SELECT 'my table', count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM "Sales Dept"."My Table" t
UNION ALL SELECT 'events', count(*), md5(string_agg(e::text, '|' ORDER BY id, day)) FROM "Sales Dept".events e
UNION ALL SELECT 'cache', count(*), md5(string_agg(c::text, '|' ORDER BY k)) FROM public."Cache.Entries" c
UNION ALL SELECT 'weird', count(*), md5(string_agg(w::text, '|' ORDER BY "X")) FROM "we.ird"."a ""b"".c" w
UNION ALL SELECT 'upper', count(*), md5(string_agg(u::text, '|' ORDER BY "ID")) FROM public."UPPER" u
UNION ALL SELECT 'mood counts', count(*), md5(string_agg(m::text, '|' ORDER BY mood)) FROM "Sales Dept"."Mood Counts" m
UNION ALL SELECT 'extensions', count(*), string_agg(extname, ',' ORDER BY extname) FROM pg_extension;
"""
