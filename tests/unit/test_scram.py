"""SCRAM-SHA-256 verifiers as PostgreSQL stores them."""

import base64

import pytest

# Verifiers PostgreSQL makes itself are cross-checked in tests/functional/test_roles.py.


def test_verifier_shape_and_roundtrip(scram):
    stored = scram.verifier("secret-password-1")
    prefix, rest = stored.split("$", 1)
    assert prefix == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    assert int(iterations) == 4096
    assert len(base64.b64decode(salt)) == 16
    assert all(len(base64.b64decode(k)) == 32 for k in keys.split(":"))
    assert scram.matches("secret-password-1", stored)
    assert not scram.matches("secret-password-2", stored)


def test_same_salt_same_verifier_and_random_salts_differ(scram):
    salt = b"0123456789abcdef"
    assert scram.verifier("pw", salt=salt) == scram.verifier("pw", salt=salt)
    assert scram.verifier("pw") != scram.verifier("pw")


def test_rfc7677_test_vector(scram):
    # RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored = scram.verifier("pencil", salt=salt, iterations=4096)
    server_key = stored.rsplit(":", 1)[1]
    # ServerSignature in the RFC derives from this ServerKey; the key itself is:
    assert server_key == "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="


def test_md5_and_null_never_match(scram):
    assert not scram.matches("pw", None)
    assert not scram.matches("pw", "md5" + "0" * 32)
    assert scram.parse("SCRAM-SHA-256$notanumber:xx$yy:zz") is None


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
