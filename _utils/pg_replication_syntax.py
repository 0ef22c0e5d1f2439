# SPDX-License-Identifier: Apache-2.0
"""Grammars and escapes for every place a pillar value lands: postgresql.conf, libpq
connection strings, ``.pgpass``, Barman's INI files, cron lines and shell command lines.

Pure functions, no Salt: ``pg_replication_plan`` checks each pillar value with the grammar of
its target (``check_*`` return an error message, or None when the value is fine) and the
plan's derived strings are built with the escapes here, so templates never quote by hand.
"""

import ipaddress
import re
import shlex

# Control characters end a line in every target format (a newline in a Barman value is a
# new option, e.g. post_backup_script, which Barman runs through a shell).
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Absolute paths: no spaces, quotes, shell or INI metacharacters, no '..' segment.
PATH_RE = re.compile(r"^/[A-Za-z0-9_.@+/-]*$")
# PostgreSQL configuration parameter names (custom ones have one dot: ext.name).
SETTING_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
# Physical slot names (Barman insists on ^[0-9a-z_]+$); role names kept to plain identifiers.
SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
# Names starting with pg_ are PostgreSQL's own (CREATE ROLE refuses them).
ROLE_RE = re.compile(r"^(?!pg_)[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Application objects (databases, schemas, extensions, grants, pg_hba.conf rules), by what
# each names; every name also goes into SQL through psycopg2's sql.Identifier.
APP_RE = {
    what: re.compile(pattern)
    for what, pattern in {
        "database": r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$",
        "ident": ROLE_RE.pattern,
        "extension": r"^[a-z_][a-z0-9_-]{0,62}$",
        "extension_version": r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$",
        "encoding": r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
        "locale": r"^[A-Za-z][A-Za-z0-9_.@-]{0,63}$",
        "valid_until": r"^(infinity|[0-9]{4}-[0-9]{2}-[0-9]{2}"
        r"([ T][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?([+-][0-9]{2}(:?[0-9]{2})?|Z)?)$",
        "object": r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\([A-Za-z0-9_ ,\[\]]*\))?$",
        "privilege": r"^(ALL|SELECT|INSERT|UPDATE|DELETE|TRUNCATE|REFERENCES|TRIGGER"
        r"|USAGE|CREATE|CONNECT|TEMPORARY|EXECUTE)$",
        "hba_name": r"^\+?[A-Za-z_][A-Za-z0-9_-]{0,62}$",
    }.items()
}
# Salt minion ids, Barman server names, application names, cluster names.
MINION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
SERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
APPLICATION_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
CLUSTER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# Debian/RedHat package names, systemd/SysV service names, PEP 440 versions.
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+._-]{0,127}$")
SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@_.:-]{0,127}$")
PIP_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,31}$")
# initdb options: --name or --name=value, value without spaces or shell metacharacters.
INITDB_OPTION_RE = re.compile(r"^--[a-z][a-z-]*(=[A-Za-z0-9_.:/@+-]+)?$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]+$")
# barman:cloud. The destination: s3://bucket[/prefix] (bucket names as S3 allows them); the
# endpoint: scheme, host (name, IPv4 or [IPv6]) and port only; the access key pair as AWS
# issues it (the secret never quoted in a message); a region name.
S3_URL_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.-]+)*/?$")
ENDPOINT_URL_RE = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?/?$")
ACCESS_KEY_ID_RE = re.compile(r"^[A-Za-z0-9]{4,128}$")
SECRET_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9/+=_.-]{8,256}$")
REGION_RE = re.compile(r"^[a-z0-9-]{1,32}$")
BARE_CONNINFO_RE = re.compile(r"^[A-Za-z0-9_.@/:+-]+$")
# A cron schedule: five fields of digits, *, /, - and , (or one of cron's @ names).
CRON_SCHEDULE_RE = re.compile(r"^([0-9*/,-]+( [0-9*/,-]+){4}|@(hourly|daily|weekly|monthly))$")
# A Prometheus duration: 30s, 2m, 1h30m (0s: at once).
DURATION_RE = re.compile(r"^([0-9]+(ms|[smhdwy]))+$")
# A Barman backup id (barman list-backups): its start time, YYYYMMDDTHHMMSS.
BACKUP_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}$")
RETENTION_RE = re.compile(r"^(REDUNDANCY [1-9][0-9]*|RECOVERY WINDOW OF [1-9][0-9]* (DAY|WEEK|MONTH)S?)$", re.I)


def check_pattern(value, pattern, what):
    """A message if ``value`` is not a string matching ``pattern`` (``what`` it should be)."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        return f"{value!r} is not {what}"
    return None


def check_path(value):
    """Absolute path of safe characters, with no '.' or '..' segment."""
    if not isinstance(value, str) or not PATH_RE.fullmatch(value):
        return f"{value!r} is not an absolute path of letters, digits and _ . @ + - /"
    if any(part in (".", "..") for part in value.split("/")):
        return f"{value!r} must not contain '.' or '..' segments"
    return None


def check_text(value):
    """A one-line string (descriptions, setting values): no control character."""
    return _check_one_line(value, f"{value!r} is not a string", f"{value!r} contains a control character")


def check_secret(value):
    """A password: a one-line string. The message never quotes the value."""
    not_a_string = f"must be a string, not {type(value).__name__}"
    return _check_one_line(value, not_a_string, "contains a control character", ", which .pgpass cannot hold")


def _check_one_line(value, not_a_string, control, why=""):
    if not isinstance(value, str):
        return not_a_string
    if CONTROL_RE.search(value):
        return f"{control} (newline, tab, ...){why}"
    return None


PEM_RE = re.compile(r"\A-----BEGIN (?P<kind>[A-Z0-9 ]+)-----\n(?:[A-Za-z0-9+/=]{1,76}\n)+-----END (?P=kind)-----\n?\Z")


def check_pem(value, kinds):
    """``value`` is one PEM block of one of ``kinds`` (e.g. CERTIFICATE): base64 lines only,
    so nothing else can reach the file it is written to."""
    if not isinstance(value, str):
        return f"must be a PEM text, not {type(value).__name__}"
    match = PEM_RE.match(value.strip() + "\n")
    if not match or match.group("kind") not in kinds:
        return f"must be one PEM block ({' or '.join(kinds)})"
    return None


def check_ip(value):
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def check_host(value):
    """An IP address or a DNS host name (not something that merely looks like an IP)."""
    if check_ip(value) is None:
        return None
    if isinstance(value, str) and HOSTNAME_RE.fullmatch(value) and not re.fullmatch(r"[0-9.]+", value):
        return None
    return f"{value!r} is not an IP address or host name"


def check_int(value, minimum=None, maximum=None):
    """An integer (YAML int, or a string of digits) within bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"{value!r} is not a whole number"
    try:
        number = int(value)
    except ValueError:
        return f"{value!r} is not a whole number"
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = f"from {minimum}" + (f" to {maximum}" if maximum is not None else "")
        return f"{value!r} is out of range ({bounds})"
    return None


def check_setting_value(value):
    """postgresql.conf values: booleans, numbers and one-line strings."""
    if isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, str):
        return check_text(value)
    return f"{value!r} is a {type(value).__name__}; a setting takes a string, number or boolean"


# --------------------------------------------------------------------------- escapes


def conf_value(value):
    """A value for postgresql.conf / recovery.conf: on/off, a bare number, or a quoted string
    (backslashes doubled, single quotes doubled: PostgreSQL reads both escapes)."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


CONNINFO_KEY_RE = re.compile(r"^[a-z][a-z_]*$")


def conninfo(**params):
    """A libpq key=value connection string. A value of plain characters stays bare; any other
    is single-quoted with ``\\`` and ``'`` backslash-escaped, so spaces or quotes in a value
    cannot start another keyword (libpq reads it back to the same value: tests/unit/
    test_conninfo_libpq.py). A value libpq cannot hold (a NUL character, text that is not
    Unicode, a boolean or another non-scalar) raises ValueError: refused, never mangled."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if not CONNINFO_KEY_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a libpq connection keyword")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(
                f"{key}: a connection string value is a string or a whole number, not {type(value).__name__}"
            )
        value = str(value)
        if "\x00" in value:
            raise ValueError(f"{key}: a connection string value cannot hold a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{key}: the value is not valid Unicode text ({exc.reason})") from None
        if not BARE_CONNINFO_RE.fullmatch(value):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def pgpass_field(value):
    """One field of a .pgpass line: ``\\`` and ``:`` escaped (IPv6 addresses have colons)."""
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(host, port, database, user, password):
    return ":".join(pgpass_field(v) for v in (host, port, database, user, password))


def shell_words(words):
    """A shell command line from a list of words, each quoted for /bin/sh."""
    return " ".join(shlex.quote(str(w)) for w in words)
