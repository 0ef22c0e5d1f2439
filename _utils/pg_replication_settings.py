# SPDX-License-Identifier: Apache-2.0
"""Which configured settings differ from what a running server uses, the way PostgreSQL
reads them: units (``128MB`` against ``16384`` of ``8kB``), booleans (``on``/``true``/``1``),
enums without regard to case. Pure functions: the execution module supplies ``pg_settings``.

Used to predict, before a configuration file is written, the restart a change will need
(``pg_settings.pending_restart`` only knows once the file is written and reloaded).
"""

import re

MEMORY_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
TIME_UNITS = {"us": 1, "ms": 1000, "s": 1000**2, "min": 60 * 1000**2, "h": 3600 * 1000**2, "d": 86400 * 1000**2}
BOOL_WORDS = {"on": "on", "true": "on", "yes": "on", "1": "on", "off": "off", "false": "off", "no": "off", "0": "off"}
_NUMBER_UNIT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_BASE_UNIT = re.compile(r"^([0-9]*)([a-zA-Z]+)$")
# Settings a hot standby needs at least as high as its primary's (PostgreSQL docs, "Hot
# Standby", Administrator's Overview): raise them on standbys first, lower them on the primary
# first. Each with pg_controldata's name of the value the primary last recorded in the WAL.
HOT_STANDBY_MINIMUMS = {
    "max_connections": "max_connections setting",
    "max_worker_processes": "max_worker_processes setting",
    "max_wal_senders": "max_wal_senders setting",
    "max_prepared_transactions": "max_prepared_xacts setting",
    "max_locks_per_transaction": "max_locks_per_xact setting",
}


def _scale(unit):
    """Bytes or microseconds per ``unit`` (None for a unit PostgreSQL does not use)."""
    return MEMORY_UNITS.get(unit) or TIME_UNITS.get(unit)


def _base(unit):
    """Scale of pg_settings.unit, which may carry a multiple (``8kB``, ``16MB``)."""
    match = _BASE_UNIT.match(unit or "")
    if not match or _scale(match.group(2)) is None:
        return None
    return int(match.group(1) or 1) * _scale(match.group(2))


def normalize(value, row):
    """``value`` as pg_settings would show it for ``row`` (its vartype, unit, setting): a
    comparable token, or None when it cannot be read (the caller then treats it as changed)."""
    text = str(value).strip().strip("'")
    vartype = row.get("vartype")
    if isinstance(value, bool):
        text = "on" if value else "off"
    if vartype == "bool":
        return BOOL_WORDS.get(text.lower())
    if vartype in ("integer", "real"):
        match = _NUMBER_UNIT.match(text)
        if not match:
            return None
        number, unit = float(match.group(1)), match.group(2)
        base = _base(row.get("unit"))
        if unit:
            if base is None or _scale(unit) is None:
                return None
            number = number * _scale(unit) / base
        return round(number, 6)
    if vartype == "enum":
        return text.lower()
    return text


def differing(wanted, rows):
    """Names of the settings in ``wanted`` ({name: value}) whose value differs from the
    running one; ``rows`` are pg_settings rows (name, setting, unit, vartype) by name.
    Settings the server does not know are left out."""
    changed = []
    for name, value in sorted(wanted.items()):
        row = rows.get(name)
        if row is None:
            continue
        mine = normalize(value, row)
        if mine is None or mine != normalize(row["setting"], row):
            changed.append(name)
    return changed


def recorded_minimums(control):
    """The hot-standby minimums as pg_controldata (``control``, ``{field: value}``) shows the
    primary recorded them: ``{name: value}``."""
    return {name: control[field] for name, field in HOT_STANDBY_MINIMUMS.items() if field in control}


def lowered_minimums(wanted, running):
    """Hot-standby minimum settings that ``wanted`` lowers below ``running`` (both
    {name: value}): {name: (running, wanted)}."""
    lowered = {}
    for name in HOT_STANDBY_MINIMUMS:
        if name in wanted and name in running:
            try:
                new, old = int(str(wanted[name]).strip("'")), int(str(running[name]))
            except ValueError:
                continue
            if new < old:
                lowered[name] = (old, new)
    return lowered


def apply_delay_seconds(settings):
    """A standby's ``recovery_min_apply_delay`` (milliseconds without a unit) in seconds: 0
    for none; None when it cannot be read (the schema lets any setting value through)."""
    value = (settings or {}).get("recovery_min_apply_delay")
    if value in (None, ""):
        return 0
    number = normalize(value, {"vartype": "integer", "unit": "ms"})
    return None if number is None else number / 1000
