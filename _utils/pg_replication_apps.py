# SPDX-License-Identifier: Apache-2.0
"""Application objects from the pillar: databases (extensions, schemas), roles, privileges,
pg_hba.conf rules and the ``absent`` lists; the checks across them (an owner, a grantee, a
rule's user must be a role the pillar declares; nothing both declared and absent; the
formula's own roles and databases out of reach) and what the plan holds of them.

A database or a role leaves only when ``absent`` lists it: one that disappears from the
pillar is left alone. Privileges are exact for what an entry names (its role, on its
objects): a privilege the entry no longer lists is revoked.

Functions append ``"pillar:key: message"`` to ``errors``. Pure logic; runs on the minion's
Python (3.9 on Debian 11).
"""

import os
import runpy

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
schema = _sibling("pg_replication_schema")
KEY = schema.KEY

# The privileges each kind of object has (ALL: every one of them).
PRIVILEGES = {
    "database": ("CONNECT", "CREATE", "TEMPORARY"),
    "schema": ("CREATE", "USAGE"),
    "tables": ("DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"),
    "sequences": ("SELECT", "UPDATE", "USAGE"),
    "functions": ("EXECUTE",),
}
# Databases PostgreSQL itself needs.
SYSTEM_DATABASES = ("postgres", "template0", "template1")
# The role attributes a pillar role may set, and their defaults (LOGIN and nothing else).
ROLE_DEFAULTS = {"login": True, "superuser": False, "createdb": False, "createrole": False, "inherit": True,
                 "replication": False, "bypassrls": False}  # fmt: skip


def privileges_of(on):
    """The privileges a kind of object (database, schema, tables, sequences, functions) has."""
    return PRIVILEGES[on]


def formula_roles(config):
    """The roles the formula makes itself (replication, Barman's) and postgres."""
    barman = config.get("barman") or {}
    names = {
        "postgres",
        (config.get("replication") or {}).get("user"),
        barman.get("user"),
        barman.get("streaming_user"),
    }
    return {n for n in names if n}


def plan(config, errors):
    """What the plan holds of the application objects: ``{databases, roles, privileges,
    absent}``, each checked across the others."""
    databases = {str(k): dict(v or {}) for k, v in (config.get("databases") or {}).items()}
    roles = {str(k): dict(v or {}) for k, v in (config.get("roles") or {}).items()}
    absent = config.get("absent") or {}
    absent = {"databases": list(absent.get("databases") or []), "roles": list(absent.get("roles") or [])}
    own = formula_roles(config)
    known = set(roles) | own
    _check_roles(roles, absent, own, errors)
    _check_databases(databases, known, absent, errors)
    privileges = [_privilege(p, i, known, set(databases), errors) for i, p in enumerate(config.get("privileges") or [])]
    _check_unique(privileges, errors)
    return {
        "databases": {name: _database(spec) for name, spec in sorted(databases.items())},
        "roles": {name: _role(spec) for name, spec in sorted(roles.items())},
        "privileges": privileges,
        "absent": absent,
    }


def _check_roles(roles, absent, own, errors):
    for name, spec in roles.items():
        key = f"{KEY}:roles:{name}"
        if name in own or name.startswith("pg_"):
            errors.append(f"{key}: {name} is the formula's or PostgreSQL's own role")
        if name in absent["roles"]:
            errors.append(f"{key}: {name} is also in {KEY}:absent:roles")
        if spec.get("password") is not None:
            schema.check_password(errors, f"{key}:password", name, spec["password"])
        for i, group in enumerate(spec.get("member_of") or []):
            if group not in roles and not str(group).startswith("pg_"):
                errors.append(f"{key}:member_of:{i}: {group!r} is not a role of {KEY}:roles (nor pg_*)")
            elif group == name:
                errors.append(f"{key}:member_of:{i}: a role cannot be a member of itself")
    for i, name in enumerate(absent["roles"]):
        if name in own or str(name).startswith("pg_"):
            errors.append(f"{KEY}:absent:roles:{i}: {name} is the formula's or PostgreSQL's own role")


def _check_databases(databases, known, absent, errors):
    for name, spec in databases.items():
        key = f"{KEY}:databases:{name}"
        if name in SYSTEM_DATABASES:
            errors.append(f"{key}: {name} is PostgreSQL's own database")
        if name in absent["databases"]:
            errors.append(f"{key}: {name} is also in {KEY}:absent:databases")
        if spec.get("owner") is not None and spec["owner"] not in known:
            errors.append(f"{key}:owner: {spec['owner']!r} is not a role of {KEY}:roles")
        if spec.get("locale") and (spec.get("lc_collate") or spec.get("lc_ctype")):
            errors.append(f"{key}:locale: set locale, or lc_collate and lc_ctype, not both")
        for schema_name, schema_spec in (spec.get("schemas") or {}).items():
            owner = (schema_spec or {}).get("owner")
            if owner is not None and owner not in known:
                errors.append(f"{key}:schemas:{schema_name}:owner: {owner!r} is not a role of {KEY}:roles")
    for i, name in enumerate(absent["databases"]):
        if name in SYSTEM_DATABASES:
            errors.append(f"{KEY}:absent:databases:{i}: {name} is PostgreSQL's own database")


def _database(spec):
    return {
        "owner": spec.get("owner") or "postgres",
        "encoding": spec.get("encoding"),
        "lc_collate": spec.get("lc_collate") or spec.get("locale"),
        "lc_ctype": spec.get("lc_ctype") or spec.get("locale"),
        "template": spec.get("template"),
        "connlimit": int(spec.get("connlimit", -1)),
        "extensions": {
            name: {"version": (ext or {}).get("version"), "schema": (ext or {}).get("schema")}
            for name, ext in sorted((spec.get("extensions") or {}).items())
        },
        "schemas": {name: (s or {}).get("owner") for name, s in sorted((spec.get("schemas") or {}).items())},
    }


def _role(spec):
    out = {attr: bool(spec.get(attr, default)) for attr, default in ROLE_DEFAULTS.items()}
    out.update(
        connlimit=int(spec.get("connlimit", -1)),
        valid_until=spec.get("valid_until"),
        member_of=sorted(spec.get("member_of") or []),
        has_password=spec.get("password") is not None,
    )
    return out


def _privilege(spec, i, known, databases, errors):
    """One privileges entry, checked, with ALL expanded and the privileges sorted."""
    key, on = f"{KEY}:privileges:{i}", spec["on"]
    if spec["role"] not in known and spec["role"] != "PUBLIC":
        errors.append(f"{key}:role: {spec['role']!r} is not a role of {KEY}:roles")
    if spec["database"] not in databases and spec["database"] != "postgres":
        errors.append(f"{key}:database: {spec['database']!r} is not a database of {KEY}:databases")
    if on == "database" and spec.get("schema") is not None:
        errors.append(f"{key}:schema: a database privilege names no schema")
    if on != "database" and spec.get("schema") is None and not (spec.get("default_for") and on != "schema"):
        errors.append(f"{key}:schema: is required for privileges on {on}")
    if spec.get("objects") and on not in ("tables", "sequences", "functions"):
        errors.append(f"{key}:objects: only tables, sequences and functions are listed")
    if spec.get("default_for") is not None:
        if on not in ("tables", "sequences", "functions"):
            errors.append(f"{key}:default_for: default privileges are for tables, sequences or functions")
        elif spec.get("objects"):
            errors.append(f"{key}:objects: default privileges apply to objects not made yet")
        elif spec["default_for"] not in known:
            errors.append(f"{key}:default_for: {spec['default_for']!r} is not a role of {KEY}:roles")
    for j, name in enumerate(spec["privileges"]):
        if name != "ALL" and name not in PRIVILEGES[on]:
            errors.append(f"{key}:privileges:{j}: {name} is not a privilege on {on} ({', '.join(PRIVILEGES[on])})")
    wanted = PRIVILEGES[on] if "ALL" in spec["privileges"] else sorted(set(spec["privileges"]))
    return {
        "key": key,
        "role": spec["role"],
        "database": spec["database"],
        "on": on,
        "schema": spec.get("schema"),
        "objects": list(spec.get("objects") or []) or None,
        "default_for": spec.get("default_for"),
        "privileges": list(wanted),
    }


def _check_unique(privileges, errors):
    seen = {}
    for p in privileges:
        ident = (p["role"], p["database"], p["on"], p["schema"], p["default_for"], tuple(p["objects"] or ()))
        if ident in seen:
            errors.append(f"{p['key']}: the same grant as {seen[ident]}; give its privileges in one entry")
        seen.setdefault(ident, p["key"])


def hba(config, tls, errors):
    """The pillar's pg_hba.conf rules for applications, after the formula's own lines (which
    they cannot override: PostgreSQL takes the first line that matches)."""
    lines = []
    for i, rule in enumerate(config.get("hba") or []):
        key = f"{KEY}:hba:{i}"
        address = schema.network(rule["address"]) if rule.get("address") else ""
        if rule["type"] == "local" and address:
            errors.append(f"{key}:address: a local rule has no address")
        if rule["type"] != "local" and not address:
            errors.append(f"{key}:address: is required for a {rule['type']} rule")
        if rule["method"] == "peer" and rule["type"] != "local":
            errors.append(f"{key}:method: peer is for local rules only")
        if rule["method"] == "cert" and rule["type"] != "hostssl":
            errors.append(f"{key}:method: cert is for hostssl rules only")
        kind = "hostssl" if tls and rule["type"] == "host" else rule["type"]
        lines.append({"type": kind, "database": rule["database"], "user": rule["user"], "address": address,
                      "method": rule["method"]})  # fmt: skip
    return lines
