"""SCRAM-SHA-256 verifiers re-derived to compare a stored one with a password.

New verifiers come from libpq; those it makes, and those PostgreSQL makes itself, are
cross-checked against this re-derivation in tests/functional/test_roles.py and
tests/functional/test_scram_libpq.py."""

import base64
import inspect

import pytest

# RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_KEY = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="


def test_rfc7677_test_vector(scram):
    stored = scram.verifier("pencil", RFC_SALT, 4096)
    # ServerSignature in the RFC derives from this ServerKey; the key itself is:
    assert stored.rsplit(":", 1)[1] == RFC_SERVER_KEY
    assert stored.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert scram.matches("pencil", stored)
    assert not scram.matches("pencil ", stored)


def test_no_new_verifier_is_made_here(scram):
    """Salt and iteration count are the stored verifier's: nothing here draws a salt."""
    params = inspect.signature(scram.verifier).parameters
    assert all(p.default is inspect.Parameter.empty for p in params.values())
    assert scram.verifier("pw", b"0123456789abcdef", 4096) == scram.verifier("pw", b"0123456789abcdef", 4096)


def test_the_stored_iteration_count_is_used(scram):
    stored = scram.verifier("pw", RFC_SALT, 10000)
    assert stored.startswith("SCRAM-SHA-256$10000:")
    assert scram.matches("pw", stored)
    assert stored != scram.verifier("pw", RFC_SALT, 4096)
    # The same keys under another iteration count are another verifier.
    assert not scram.matches("pw", stored.replace("$10000:", "$4096:", 1))


def test_md5_null_and_malformed_never_match(scram):
    good = scram.verifier("pw", RFC_SALT, 4096)
    prefix, keys = good.rsplit("$", 1)
    stored_key, server_key = keys.split(":")
    for stored in (
        None,
        "",
        "md5" + "0" * 32,
        "SCRAM-SHA-256$notanumber:xx$yy:zz",
        "SCRAM-SHA-256$0:" + good.split(":", 1)[1],  # no iterations
        "SCRAM-SHA-256$4096:$" + keys,  # no salt
        f"{prefix}${stored_key}",  # one key
        f"{prefix}${stored_key}:{server_key[:-4]}",  # a short key
        f"{prefix}${stored_key}:{server_key}!",  # not base64
        f"{prefix}${server_key}:{stored_key}",  # keys swapped
    ):
        assert not scram.matches("pw", stored), stored
    assert scram.parse(good) == (4096, RFC_SALT, base64.b64decode(stored_key), base64.b64decode(server_key))


@pytest.mark.parametrize(
    ("password", "same_as"),
    [
        # ASCII, controls included, is used as it is.
        ("plain ascii", "plain ascii"),
        ("tab\tand\x7f", "tab\tand\x7f"),
        # Mapped: a non-ASCII space becomes a space, a soft hyphen disappears; NFKC.
        ("no\u00a0break", "no break"),
        ("soft\u00adhyphen", "softhyphen"),
        ("\ufb01ne", "fine"),
        ("e\u0301", "\u00e9"),
        # Unassigned in Unicode 3.2 (table A.1): the raw text, not its NFKC form.
        ("\ufb01\U0001f418", "\ufb01\U0001f418"),
    ],
)
def test_saslprep_like_postgresql(scram, password, same_as):
    assert scram._saslprep(password) == same_as.encode("utf-8")


def test_saslprep_unassigned_code_point_keeps_raw_bytes(scram):
    # NFKC would turn the ligature into "fi"; PostgreSQL and libpq give up on SASLprep instead.
    assert scram._saslprep("\ufb01\U0001f418") != scram._saslprep("fi\U0001f418")
