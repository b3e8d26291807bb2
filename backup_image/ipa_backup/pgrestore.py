"""A PostgreSQL restore that never damages what is live.

Before any download: the target server's major against the image's clients and the set's pg_dump
major, and a non-empty target without --force. After the download, before anything is touched: the
archive's own pg_dump version, and the roles it needs (owners, grantees, policy roles) against the
target server's roles.

A target database that does not exist is created like the archive's (encoding, locale, owner) and
restored directly; a failure drops it again. An existing target is never written to: the set is
restored into a new database beside it, checked, given the live database's settings, grants and
comment, and swapped in by two renames in one short transaction. A failure before the swap drops
only the new database; the old one is dropped after the swap, or kept with --keep-old.
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipa_backup import archive as archive_format
from ipa_backup import log, pg, proc
from ipa_backup.config import libpq_where
from ipa_backup.errors import IntegrityError, TargetError
from ipa_backup.pg import Token, quote_ident, quote_literal

# A set whose biggest table holds at least this share of the data gains little from --jobs (one
# table loads on one connection), so it is streamed into one pg_restore instead of being staged
# uncompressed first: no staging write, no offsets pass, and loading starts at once.
STREAM_TABLE_SHARE = 0.5
VERIFY_ROWS_MAX_BYTES = 4 << 30  # row counts are compared before the swap up to this archive size
SWAP_ATTEMPTS = 3
SWAP_LOCK_TIMEOUT_SECONDS = 10
NAME_MAX_BYTES = 63  # PostgreSQL's identifier limit


@dataclass(frozen=True)
class Options:
    jobs: int
    session_options: str  # PGOPTIONS of the restore's sessions (settings.restore_pg_options)
    no_owner: bool = False
    with_globals: bool = False
    keep_old: bool = False


@dataclass(frozen=True)
class Target:
    database: str
    set_id: str
    client: pg.Client  # of exactly the server's major
    clients: pg.Clients  # all the image has: the archive's own pg_dump version is checked against them later
    server_version: str
    dump_major: int | None  # from the manifest
    exists: bool


def streams(manifest: dict[str, Any], jobs: int) -> bool:
    """Whether the restore streams the archive (kept compressed) rather than staging it uncompressed."""
    share = (manifest.get("targets") or {}).get("postgres", {}).get("largest_table_share")
    return jobs == 1 or (isinstance(share, int | float) and share >= STREAM_TABLE_SHARE)


def check_server(database: str, manifest: dict[str, Any], set_id: str, clients: pg.Clients) -> Target:
    """Pick pg_restore for the target server, or refuse the pairing; reads only, before any download."""
    version, major = pg.server_version("postgres", TargetError, pg.newest(clients))
    dump_major = pg.manifest_dump_major(manifest)
    client = pg.restore_client(clients, major, version, dump_major, f"set {set_id}", database)
    return Target(database, set_id, client, clients, version, dump_major, pg.database_exists(database, client))


def check_target(database: str, force: bool, manifest: dict[str, Any], set_id: str, clients: pg.Clients) -> Target:
    """check_server, and refuse a non-empty target without --force."""
    target = check_server(database, manifest, set_id, clients)
    if target.exists:
        objects = pg.user_object_count(database, target.client)
        if objects and not force:
            raise TargetError(
                f"PostgreSQL target database {database!r} is not empty ({objects} objects); restore refuses to overwrite it without --force"
            )
    if target.exists:
        check_swap_rights(target)
    log.info(
        "postgres target checked",
        database=database,
        server_version=target.server_version,
        pg_restore_major=target.client.major,
        dump_major=target.dump_major,
        exists=target.exists,
    )
    return target


def check_swap_rights(target: Target) -> None:
    """The swap renames the live database (its owner with CREATEDB may) and ends its sessions
    (pg_signal_backend may): refused now rather than after an hours-long restore."""
    rows = pg.query(
        "SELECT r.rolsuper, r.rolcreatedb, pg_has_role(current_user, d.datdba, 'MEMBER'),"
        " pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') FROM pg_roles r, pg_database d"
        f" WHERE r.rolname = current_user AND d.datname = {quote_literal(target.database)}",
        "postgres",
        TargetError,
        client=target.client,
    )
    superuser, createdb, owner, signal = (value == "t" for value in rows[0])
    missing = (
        []
        if superuser
        else [
            need
            for need, has in (
                ("CREATEDB", createdb),
                (f"membership in the owner of {target.database!r}", owner),
                ("membership in pg_signal_backend", signal),
            )
            if not has
        ]
    )
    if missing:
        raise TargetError(
            f"restoring over the existing database {target.database!r} ends with a swap by rename that "
            f"the restoring user may not do: it lacks {', '.join(missing)}; grant them, or restore "
            "into a new database with --pg-database and switch the application over"
        )


def read_archive(target: Target, archive: Path) -> archive_format.Toc:
    """The archive's table of contents, its pg_dump version checked against the manifest and the target."""
    try:
        toc = archive_format.read_archive_toc(archive)
        dump_major = toc.dump_major
    except archive_format.ArchiveFormatError as exc:
        raise IntegrityError(f"postgres.dump.zst of set {target.set_id} is not an archive this tool can read: {exc}") from exc
    if target.dump_major is not None and dump_major != target.dump_major:
        raise IntegrityError(
            f"the archive of set {target.set_id} was written by pg_dump {dump_major}, but its manifest records pg_dump {target.dump_major}"
        )
    pg.restore_client(target.clients, target.client.major, target.server_version, dump_major, f"set {target.set_id}", target.database)
    return toc


# --- roles -------------------------------------------------------------------------------------

_NOT_ROLES = {"PUBLIC", "CURRENT_USER", "CURRENT_ROLE", "SESSION_USER", "GROUP", "USER", "ROLE", "DEFAULT"}
_LIST_END = {"WITH", "GRANTED", "CASCADE", "RESTRICT", "USING", "IN", "GRANT", "REVOKE", "ON", "TO", "FROM"}


def _role_list(tokens: list[Token], start: int) -> list[str]:
    """Role names from tokens[start] up to a keyword that ends the list."""
    names = []
    for token in tokens[start:]:
        if token.is_word(*_LIST_END) or (token.kind == "punct" and token.text in "();"):
            break
        if token.kind == "ident" or (token.kind == "word" and token.text.upper() not in _NOT_ROLES):
            names.append(token.name)
    return names


def _top_level(tokens: list[Token]) -> list[tuple[int, Token]]:
    """(index, token) outside parentheses."""
    out, depth = [], 0
    for i, token in enumerate(tokens):
        if token.kind == "punct" and token.text == "(":
            depth += 1
        elif token.kind == "punct" and token.text == ")":
            depth -= 1
        elif depth == 0:
            out.append((i, token))
    return out


def roles_in_sql(sql: str) -> set[str]:
    """Roles named by GRANT/REVOKE (grantees and grantors), SET SESSION AUTHORIZATION, CREATE POLICY ... TO,
    ALTER DEFAULT PRIVILEGES FOR ROLE and ALTER ROLE ... IN DATABASE statements."""
    roles: set[str] = set()
    for _, tokens in pg.sql_statements(sql):
        top = _top_level(tokens)
        words = [t.text.upper() if t.kind == "word" else "" for _, t in top]
        if words[:3] == ["SET", "SESSION", "AUTHORIZATION"] and len(top) > 3:
            roles.update(_role_list(tokens, top[3][0]))
            continue
        if words[:2] == ["ALTER", "ROLE"] and len(top) > 2:
            roles.update(_role_list(tokens, top[2][0]))
            continue
        if words[:4] == ["ALTER", "DEFAULT", "PRIVILEGES", "FOR"] and len(top) > 5:
            roles.update(_role_list(tokens, top[5][0]))
        if words[:2] == ["CREATE", "POLICY"] and "TO" in words:
            roles.update(_role_list(tokens, top[words.index("TO") + 1][0]))
            continue
        for verb, keyword in (("GRANT", "TO"), ("REVOKE", "FROM")):
            if verb not in words:
                continue
            rest = words[words.index(verb) :]
            offset = words.index(verb)
            if keyword in rest:
                at = offset + rest.index(keyword) + 1
                if at < len(top):
                    roles.update(_role_list(tokens, top[at][0]))
            if "GRANTED" in rest:
                at = offset + rest.index("GRANTED") + 2  # GRANTED BY <role>
                if at < len(top):
                    roles.update(_role_list(tokens, top[at][0]))
    return roles


def _database_level(entry: archive_format.TocEntry) -> bool:
    """Entries pg_restore applies only with --create (the tool applies them itself to a new database)."""
    return entry.desc in ("DATABASE", "DATABASE PROPERTIES") or (
        entry.desc in ("ACL", "COMMENT", "SECURITY LABEL") and entry.tag.startswith("DATABASE ")
    )


def roles_needed(toc: archive_format.Toc, owners: bool, database_level: bool) -> dict[str, str]:
    """role -> the first archive entry that needs it."""
    need: dict[str, str] = {}
    for entry in toc.entries:
        if _database_level(entry) and not database_level:
            continue
        if owners and entry.owner:
            need.setdefault(entry.owner, f"owner of {entry.desc.lower()} {entry.tag}")
        if entry.desc in ("ACL", "POLICY", "DEFAULT ACL", "DATABASE PROPERTIES"):
            for role in sorted(roles_in_sql(entry.defn)):
                need.setdefault(role, f"named in {entry.desc.lower()} {entry.tag}")
    return need


@dataclass
class Globals:
    """The set's postgres-globals.sql reduced to what a target lacks."""

    script: str
    creates: list[str]
    skipped: list[str] = field(default_factory=list)


def plan_globals(text: str, existing: set[str]) -> Globals:
    """Keep the roles the target lacks (CREATE ROLE, ALTER ROLE, COMMENT ON ROLE) and memberships
    that give such a role to, or from, roles that exist then; leave out everything about existing
    roles, tablespaces (a new server's disks differ) and psql meta-commands."""
    lines = [line for line in text.splitlines() if not line.startswith("\\")]
    sql = "\n".join(lines)
    statements = pg.sql_statements(sql)
    creates = []
    for _, tokens in statements:
        role_statement = len(tokens) > 2 and tokens[0].is_word("CREATE") and tokens[1].is_word("ROLE", "USER")
        if role_statement and tokens[2].name not in existing:
            creates.append(tokens[2].name)
    new = set(creates)
    known = existing | new
    kept: list[str] = []
    skipped: list[str] = []
    for text_, tokens in statements:
        words = [t.text.upper() if t.kind == "word" else "" for t in tokens]
        if words[:1] == ["SET"]:
            kept.append(text_)
        elif words[:2] in (["CREATE", "ROLE"], ["CREATE", "USER"], ["ALTER", "ROLE"], ["ALTER", "USER"]):
            if len(tokens) > 2 and tokens[2].name in new and "DATABASE" not in words:
                kept.append(text_)
        elif words[:3] == ["COMMENT", "ON", "ROLE"]:
            if len(tokens) > 3 and tokens[3].name in new:
                kept.append(text_)
        elif words[:1] == ["GRANT"] and "ON" not in words and "TO" in words:  # role membership: GRANT a TO b
            to = words.index("TO")
            roles = set(_role_list(tokens, 1)) | set(_role_list(tokens, to + 1))
            # GRANTED BY names the source's grantor, who need not exist here: the restoring user grants.
            end = next((t.start for t in tokens if t.is_word("GRANTED")), tokens[-1].end)
            if roles & new and roles <= known:
                kept.append(sql[tokens[0].start : end].rstrip() + ";")
            elif roles & new:
                skipped.append(text_)
        else:
            skipped.append(text_)
    return Globals("\n".join(kept) + "\n", creates, skipped)


def _server_roles(client: pg.Client) -> dict[str, Any]:
    return (
        pg.query_json(
            "SELECT json_build_object('user', current_user, 'super', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
            " 'roles', (SELECT json_agg(rolname) FROM pg_roles))",
            "postgres",
            client=client,
        )
        or {}
    )


class NotMemberError(TargetError):
    """The restoring user may not give objects to the archive's owners."""


def check_roles(
    target: Target, toc: archive_format.Toc, options: Options, globals_sql: str | None, database_level: bool | None = None
) -> Globals | None:
    """Refuse, before anything is touched, an archive that names roles the target server lacks; with
    --with-globals, plan to create them from the set's globals first. `database_level`: the archive's
    database settings and grants are applied too (default: when the restore creates the database)."""
    owners = not options.no_owner
    need = roles_needed(toc, owners, database_level=not target.exists if database_level is None else database_level)
    server = _server_roles(target.client)
    existing = set(server.get("roles") or [])
    plan = None
    if options.with_globals:
        if globals_sql is None:
            raise TargetError(
                f"set {target.set_id} has no postgres-globals.sql (the source server did not let the backup "
                "read its roles, as on a managed server): create the roles by hand, then restore without "
                "--with-globals"
            )
        plan = plan_globals(globals_sql, existing)
    missing = sorted(set(need) - existing - set(plan.creates if plan else []))
    if missing:
        detail = "; ".join(f"{r} ({need[r]})" for r in missing)
        only_owners = all(need[r].startswith("owner of") for r in missing)
        hint = (
            "restore with --with-globals to create the set's roles first (a new server)"
            + (", or with --no-owner to give every object to the restoring user" if only_owners else "")
            + ", or create them by hand"
        )
        raise TargetError(
            f"the PostgreSQL server at {libpq_where(target.database)} lacks {len(missing)} role(s) that set "
            f"{target.set_id} needs: {detail}. Nothing was changed: {hint}"
        )
    if owners and not server.get("super"):
        check_membership(target, sorted(r for r in need if r in existing), str(server.get("user")))
    return plan


def check_membership(target: Target, roles: list[str], user: str) -> None:
    """ALTER ... OWNER TO r needs the restoring user to be able to act as r."""
    if not roles:
        return
    privilege = "SET" if target.client.major >= 16 else "MEMBER"
    array = "ARRAY[" + ", ".join(quote_literal(r) for r in roles) + "]::text[]"
    lacking = (
        pg.query_json(
            f"SELECT json_agg(r) FROM unnest({array}) r WHERE NOT pg_has_role(current_user, r, '{privilege}')",
            "postgres",
            client=target.client,
        )
        or []
    )
    if lacking:
        raise NotMemberError(
            f"the restoring user {user} cannot give objects to role(s) {', '.join(lacking)} (it is not a member, "
            "as on a managed server). Nothing was changed: restore with --no-owner, or grant it those roles"
        )


def apply_globals(target: Target, plan: Globals) -> None:
    if plan.skipped:
        log.warning("globals statements not applied", statements=[s[:200] for s in plan.skipped])
    if not plan.creates:
        log.info("globals: every role of the set exists already")
        return
    pg.execute(plan.script, "postgres", client=target.client, what="creating the set's roles (--with-globals)")
    log.warning(
        "roles created from the set's globals without passwords (the backup dumps them with --no-role-passwords): "
        "set each login role's password with ALTER ROLE ... PASSWORD",
        roles=plan.creates,
    )


def drop_roles(target: Target, roles: list[str]) -> None:
    """Undo apply_globals after a failed restore (best effort)."""
    if not roles:
        return
    try:
        pg.execute(
            "".join(f"DROP ROLE IF EXISTS {quote_ident(r)};\n" for r in roles),
            "postgres",
            client=target.client,
            what="dropping the roles this restore created",
        )
    except TargetError as exc:
        log.warning("roles created by the failed restore were not dropped; drop them by hand", roles=roles, error=str(exc))


# --- databases ---------------------------------------------------------------------------------


def _rename_database(sql: str, old: str, new: str) -> str:
    """`sql` with every `DATABASE <old>` naming `new` instead."""
    tokens = pg.sql_tokens(sql)
    out, last = [], 0
    for before, token in itertools.pairwise(tokens):
        if before.is_word("DATABASE") and token.kind in ("word", "ident") and token.name == old:
            out.append(sql[last : token.start] + quote_ident(new))
            last = token.end
    return "".join(out) + sql[last:]


def create_like_archive(database: str, toc: archive_format.Toc, client: pg.Client, owner: bool) -> None:
    """CREATE DATABASE with the archive database's template0, encoding, locale (and owner)."""
    entry = next((e for e in toc.entries if e.desc == "DATABASE"), None)
    options = "TEMPLATE = template0"
    if entry is not None:
        statements = pg.sql_statements(entry.defn)
        tokens = statements[0][1] if statements else []
        if len(tokens) > 4 and tokens[3].is_word("WITH"):
            options = entry.defn[tokens[4].start : tokens[-1].end]
    if owner and entry is not None and entry.owner:
        options += f" OWNER = {quote_ident(entry.owner)}"
    pg.query(f"CREATE DATABASE {quote_ident(database)} WITH {options}", "postgres", TargetError, client=client)


def apply_archive_database_entries(database: str, toc: archive_format.Toc, client: pg.Client) -> None:
    """The archive's database-level settings, grants and comment (pg_restore gives them only with --create)."""
    sql = "".join(
        _rename_database(e.defn, toc.database, database) + "\n"
        for e in toc.entries
        if _database_level(e) and e.desc != "DATABASE" and e.defn
    )
    if sql.strip():
        pg.execute(sql, "postgres", client=client, what=f"applying the archive's database settings to {database}")


LIST_SETTINGS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
    "unix_socket_directories",
}


def split_setting_list(value: str) -> list[str]:
    """Elements of a list setting as stored ("a, \\"B c\\""), like PostgreSQL's SplitGUCList."""
    parts, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == '"':
            j, chars = i + 1, []
            while j < n and not (value[j] == '"' and not value.startswith('""', j)):
                chars.append(value[j])
                j += 2 if value.startswith('""', j) else 1
            parts.append("".join(chars))
            i = j + 1
        else:
            j = value.find(",", i)
            j = n if j < 0 else j
            parts.append(value[i:j].strip())
            i = j
        while i < n and value[i] != ",":
            i += 1
        i += 1
    return parts


def setting_sql(item: str) -> str:
    """`name TO value` of one pg_db_role_setting entry ("name=value")."""
    name, _, value = item.partition("=")
    if name.lower() in LIST_SETTINGS:
        values = ", ".join(quote_literal(v) for v in split_setting_list(value)) or "''"
    else:
        values = quote_literal(value)
    return f"{name} TO {values}"


def live_properties(database: str, client: pg.Client) -> dict[str, Any]:
    locale = "d.datlocale" if client.major >= 17 else "d.daticulocale"
    rules = "d.daticurules" if client.major >= 16 else "NULL"
    props: dict[str, Any] = pg.query_json(
        "SELECT json_build_object('oid', d.oid, 'encoding', pg_encoding_to_char(d.encoding), 'collate', d.datcollate,"
        f" 'ctype', d.datctype, 'provider', d.datlocprovider, 'locale', {locale}, 'icu_rules', {rules},"
        " 'owner', pg_get_userbyid(d.datdba), 'connlimit', d.datconnlimit, 'comment', shobj_description(d.oid, 'pg_database'),"
        " 'acl_default', d.datacl IS NULL,"
        " 'acl', (SELECT json_agg(json_build_object('grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
        "   ELSE pg_get_userbyid(a.grantee) END, 'privilege', a.privilege_type, 'grantable', a.is_grantable))"
        "   FROM aclexplode(d.datacl) a),"
        " 'settings', (SELECT json_agg(json_build_object('role', CASE WHEN s.setrole = 0 THEN NULL"
        "   ELSE pg_get_userbyid(s.setrole) END, 'config', s.setconfig)) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid))"
        f" FROM pg_database d WHERE d.datname = {quote_literal(database)}",
        "postgres",
        client=client,
    )
    if not props:
        raise TargetError(f"database {database} disappeared from {libpq_where(database)} during the restore")
    return props


def create_like_live(database: str, props: dict[str, Any], client: pg.Client, owner: bool) -> None:
    provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(props["provider"], "libc")
    options = [
        f"TEMPLATE = template0 ENCODING = {quote_literal(props['encoding'])}",
        f"LC_COLLATE = {quote_literal(props['collate'])} LC_CTYPE = {quote_literal(props['ctype'])}",
        f"LOCALE_PROVIDER = {provider}",
    ]
    if provider == "icu" and props.get("locale"):
        options.append(f"ICU_LOCALE = {quote_literal(props['locale'])}")
    if provider == "icu" and props.get("icu_rules"):
        options.append(f"ICU_RULES = {quote_literal(props['icu_rules'])}")
    if provider == "builtin" and props.get("locale"):
        options.append(f"BUILTIN_LOCALE = {quote_literal(props['locale'])}")
    options.append(f"CONNECTION LIMIT = {int(props['connlimit'])}")
    if owner:
        options.append(f"OWNER = {quote_ident(props['owner'])}")
    pg.query(f"CREATE DATABASE {quote_ident(database)} WITH {' '.join(options)}", "postgres", TargetError, client=client)


def carry_properties(database: str, props: dict[str, Any], client: pg.Client) -> None:
    """The live database's settings (ALTER DATABASE/ROLE ... SET), grants and comment, onto `database`."""
    ident = quote_ident(database)
    sql = []
    for setting in props.get("settings") or []:
        for item in setting["config"] or []:
            if setting["role"] is None:
                sql.append(f"ALTER DATABASE {ident} SET {setting_sql(item)};")
            else:
                sql.append(f"ALTER ROLE {quote_ident(setting['role'])} IN DATABASE {ident} SET {setting_sql(item)};")
    if not props.get("acl_default"):
        sql.append(f"REVOKE ALL ON DATABASE {ident} FROM PUBLIC;")
        sql.append(f"REVOKE ALL ON DATABASE {ident} FROM {quote_ident(props['owner'])};")
        for grant in props.get("acl") or []:
            grantee = "PUBLIC" if grant["grantee"] == "PUBLIC" else quote_ident(grant["grantee"])
            option = " WITH GRANT OPTION" if grant["grantable"] else ""
            sql.append(f"GRANT {grant['privilege']} ON DATABASE {ident} TO {grantee}{option};")
    if props.get("comment") is not None:
        sql.append(f"COMMENT ON DATABASE {ident} IS {quote_literal(props['comment'])};")
    if sql:
        pg.execute("\n".join(sql) + "\n", "postgres", client=client, what=f"giving {database} the live database's settings and grants")


def side_name(database: str, kind: str, tag: str) -> str:
    """`<db>__ipa_<kind>_<tag>`, the database name cut so the whole fits PostgreSQL's 63 bytes."""
    suffix = f"__ipa_{kind}_{tag}"
    base = database.encode()[: NAME_MAX_BYTES - len(suffix.encode())].decode(errors="ignore")
    return base + suffix


def swap(live: str, new: str, old: str, client: pg.Client) -> None:
    """One transaction: end the live database's sessions, rename it to `old` and `new` to its name.

    RENAME waits for the lock every session holds on its database and fails while a session remains,
    so a session that arrives between the terminate and the rename fails the transaction (retried),
    and one that arrives after the rename waits for the commit and then finds the new database.
    (ALTER DATABASE ... ALLOW_CONNECTIONS false would not help inside the transaction: other sessions
    see it only at commit; committed on its own, a crash could leave the live database closed.)
    """
    sql = (
        f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_SECONDS}s';\n"
        f"SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = {quote_literal(live)}"
        " AND pid <> pg_backend_pid();\n"
        f"ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(old)};\n"
        f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(live)};\n"
    )
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            pg.execute(sql, "postgres", client=client, what=f"swapping {new} in as {live}")
            return
        except TargetError as exc:
            transient = "being accessed by other users" in str(exc) or "lock timeout" in str(exc)
            if attempt == SWAP_ATTEMPTS or not transient:
                raise
            log.warning("swap retried: a session reached the live database meanwhile", database=live, attempt=attempt, error=str(exc))
            time.sleep(1)


def _drop_quietly(database: str, client: pg.Client) -> None:
    try:
        pg.query(f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)", "postgres", TargetError, client=client)
        log.info("restore database dropped", database=database)
    except TargetError as exc:
        log.error("the failed restore's database was not dropped; drop it by hand", database=database, error=str(exc))


def verify_rows(archive: Path, size: int, database: str, client: pg.Client) -> None:
    """Every table's row count against the archive's COPY data (skipped for archives over
    VERIFY_ROWS_MAX_BYTES uncompressed: `size`)."""
    if size > VERIFY_ROWS_MAX_BYTES:
        log.info("row counts not compared before the swap: archive too large", bytes=size, limit=VERIFY_ROWS_MAX_BYTES)
        return
    started = time.monotonic()
    result = pg.compare_with_archive(archive, database, client, samples=False)
    if result.bad_counts:
        raise TargetError(f"the restored database {database} does not match the archive: {'; '.join(result.bad_counts)}")
    log.info("row counts match the archive", database=database, tables=result.tables, seconds=round(time.monotonic() - started, 2))


# --- the restore -------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A restored database waiting to be put in place. Until `commit` the live database is untouched;
    `abandon` undoes everything this restore did (after a commit, by swapping the live database back)."""

    target: Target
    options: Options
    database: str  # what the set was restored into
    previous: str | None  # the live database's name once swapped out (None: there was no live database)
    created_roles: list[str]
    committed: bool = False

    def commit(self) -> None:
        if self.previous is not None:
            swap(self.target.database, self.database, self.previous, self.target.client)
            log.info("restored database swapped in", database=self.target.database, previous=self.previous)
        self.committed = True

    def abandon(self) -> None:
        with proc.shielded():
            self._abandon()

    def _abandon(self) -> None:
        client = self.target.client
        if self.committed and self.previous is not None:
            # A later part of the restore failed: the replaced database goes back in place.
            swap(self.target.database, self.previous, self.database, client)
            log.warning("restored database swapped out again: a later step of the restore failed", database=self.target.database)
        _drop_quietly(self.database, client)
        drop_roles(self.target, self.created_roles)

    def finish(self) -> dict[str, Any]:
        """After every part of the restore committed: drop the replaced database, unless --keep-old."""
        result: dict[str, Any] = {"database": self.target.database, "mode": "swapped" if self.previous is not None else "created"}
        if self.previous is None:
            return result
        if self.options.keep_old:
            log.info("previous database kept (--keep-old)", database=self.previous)
            result["previous_database"] = self.previous
            return result
        try:
            pg.query(f"DROP DATABASE {quote_ident(self.previous)} WITH (FORCE)", "postgres", TargetError, client=self.target.client)
            log.info("previous database dropped", database=self.previous)
        except TargetError as exc:
            log.warning("previous database not dropped; drop it by hand", database=self.previous, error=str(exc))
            result["previous_database"] = self.previous
        return result


def prepare(
    target: Target, toc: archive_format.Toc, archive: Path, archive_bytes: int, globals_plan: Globals | None, options: Options
) -> Prepared:
    """Restore the set into a database of its own: the target's name when no database has it (created
    like the archive's), else a new one beside the live database, checked and given its properties."""
    client = target.client
    tag = secrets.token_hex(3)
    if target.exists:
        database, previous = side_name(target.database, "restore", tag), side_name(target.database, "old", tag)
    else:
        database, previous = target.database, None
    prepared = Prepared(target, options, database, previous, [])
    try:
        if globals_plan is not None:
            prepared.created_roles = globals_plan.creates
            apply_globals(target, globals_plan)
        if previous is None:
            create_like_archive(database, toc, client, owner=not options.no_owner)
            pg.restore(archive, database, options.jobs, client, options.session_options, options.no_owner)
            apply_archive_database_entries(database, toc, client)
        else:
            props = live_properties(target.database, client)
            log.info("restoring beside the live database", database=target.database, restore_database=database)
            create_like_live(database, props, client, owner=not options.no_owner)
            pg.restore(archive, database, options.jobs, client, options.session_options, options.no_owner)
            verify_rows(archive, archive_bytes, database, client)
            carry_properties(database, props, client)
    except BaseException:
        prepared.abandon()  # the live database was not touched
        raise
    return prepared


def drill_restore(target: Target, toc: archive_format.Toc, archive: Path, options: Options) -> None:
    """The drill's restore into its scratch database (dropped and recreated): owners kept where the
    drill's user may give objects to them, as a restore does."""
    try:
        check_roles(target, toc, options, None, database_level=False)
        no_owner = False
    except NotMemberError as exc:
        log.info("drill restores without owners: its user cannot act as every owner", detail=str(exc))
        no_owner = True
    pg.drop_database(target.database, target.client)
    create_like_archive(target.database, toc, target.client, owner=not no_owner)
    pg.restore(archive, target.database, options.jobs, target.client, options.session_options, no_owner)
