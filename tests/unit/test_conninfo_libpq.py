"""``syntax.conninfo`` against libpq's own parser: every string it builds reads back, with
``psycopg2.extensions.parse_dsn`` (PQconninfoParse), to exactly the values it was given; a
value libpq cannot hold is refused with a message, never written in a mangled form."""

import pathlib
import re

import pytest
import yaml
from psycopg2.extensions import parse_dsn

# Values that a hand-made escape gets wrong: quotes, backslashes (alone, doubled, at the
# end, before a quote), whitespace of every kind (leading, trailing, alone, a trailing
# newline that a `$` in a regex lets through), keyword-looking text, empty strings,
# non-ASCII text, and what libpq reads specially elsewhere (a URI, a comma list of hosts).
HOSTILE = [
    "",
    " ",
    "'",
    "''",
    "\\",
    "\\\\",
    "\\'",
    "'\\",
    "ends with a backslash\\",
    "'quoted'",
    "a b",
    "a=b",
    "=",
    " = ",
    "host=evil",
    "x' host='evil",
    "x\\' host=\\'evil",
    " leading",
    "trailing ",
    "trailing-newline\n",
    "\nleading-newline",
    "two\nlines",
    "cr\r\nlf",
    "\t",
    "tab\there",
    "\x0b\x0c",
    "\x01\x1f\x7f",
    "pässwörd ünïcode",
    "日本語",
    "emoji \U0001f418",
    "\u00a0no-break space",
    "\u2028line separator",
    "\ufeffbom",
    "combining e\u0301",
    "postgresql://user@host/db",
    "postgres://",
    "host1,host2",
    "-c search_path=evil",
    "$(id)`id`;|&",
    "%s %(x)s {0}",
    "#comment",
    "a" * 5000,
]
# Keywords libpq knows, whatever their meaning: PQconninfoParse accepts any value for them.
KEYS = ["application_name", "user", "dbname", "passfile", "sslrootcert", "options", "host"]


@pytest.fixture(scope="module")
def syntax():
    from tests.conftest import load_util  # pylint: disable=import-outside-toplevel

    return load_util("pg_replication_syntax")


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("key", KEYS)
def test_each_hostile_value_reads_back_the_same(syntax, key, value):
    built = syntax.conninfo(**{key: value})
    assert parse_dsn(built) == {key: value}


def test_all_hostile_values_in_one_string_read_back_the_same(syntax):
    """Neighbours cannot leak into each other: one string holds them all, in every order."""
    for shift in range(len(KEYS)):
        params = {key: HOSTILE[(i * 7 + shift) % len(HOSTILE)] for i, key in enumerate(KEYS)}
        assert parse_dsn(syntax.conninfo(**params)) == params
    for value in HOSTILE:
        params = {"host": "10.0.0.1", "application_name": value, "user": value + "x", "port": 5432}
        expected = {**params, "port": "5432"}
        assert parse_dsn(syntax.conninfo(**params)) == expected


def test_plain_values_stay_bare_and_none_is_left_out(syntax):
    built = syntax.conninfo(
        host="fd00::1", port=5432, user="replicator", passfile="/var/lib/postgresql/.pgpass", x=None
    )
    assert built == "host=fd00::1 port=5432 user=replicator passfile=/var/lib/postgresql/.pgpass"
    assert parse_dsn(built) == {"host": "fd00::1", "port": "5432", "user": "replicator",
                                "passfile": "/var/lib/postgresql/.pgpass"}  # fmt: skip
    assert syntax.conninfo() == ""


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"application_name": "nul\x00byte"}, "application_name: a connection string value cannot hold a NUL"),
        ({"user": "\ud800"}, "user: the value is not valid Unicode text"),
        ({"sslcompression": True}, "sslcompression: a connection string value is a string or a whole number, not bool"),
        ({"port": 5432.0}, "port: a connection string value is a string or a whole number, not float"),
        ({"host": ["a", "b"]}, "host: a connection string value is a string or a whole number, not list"),
        ({"Host": "h"}, "'Host' is not a libpq connection keyword"),
        ({"host\n": "h"}, "'host\\n' is not a libpq connection keyword"),
        ({"a b": "h"}, "'a b' is not a libpq connection keyword"),
    ],
)
def test_what_libpq_cannot_hold_is_refused(syntax, params, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        syntax.conninfo(**params)


def test_the_plans_connection_strings_read_back_as_their_parts(plan_mod, merged_config):
    """The callers: a standby's primary_conninfo and Barman's two connection strings."""
    pillar = yaml.safe_load((pathlib.Path(__file__).resolve().parents[2] / "pillar.example").read_text())
    config = merged_config(pillar["pg_replication"])
    standby = plan_mod.build(config, "standby")
    assert parse_dsn(standby["conf_settings"]["primary_conninfo"]) == {
        "host": standby["upstream"]["address"],
        "port": str(standby["port"]),
        "user": standby["replication"]["user"],
        "passfile": standby["home"] + "/.pgpass",
        "application_name": standby["me"]["application_name"],
    }
    (server,) = plan_mod.build(config, "backup")["barman_servers"]
    common = {"host": server["address"], "port": str(server["port"])}
    assert parse_dsn(server["conninfo"]) == {**common, "user": server["user"], "dbname": "postgres"}
    assert parse_dsn(server["streaming_conninfo"]) == {**common, "user": server["streaming_user"]}
