# SPDX-License-Identifier: Apache-2.0
"""SCRAM-SHA-256 verifiers as PostgreSQL stores them in ``pg_authid.rolpassword``, re-derived
to COMPARE a stored one with a password.

``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802 / RFC 7677). New
verifiers are not made here: libpq makes them on the minion's connection
(``pg_replication_connection.encrypt_password``), with the salt and iteration count it and
the server choose. Here a stored verifier is recomputed from the password with the stored
salt and iteration count, so that an unchanged password is never set again; the plain
password never reaches the server, a log or a command line.
"""

import base64
import binascii
import hashlib
import hmac
import stringprep
import unicodedata

PREFIX = "SCRAM-SHA-256$"


def _saslprep(password):
    """SASLprep (RFC 4013) as PostgreSQL and libpq apply it (src/common/saslprep.c); like
    them, fall back to the raw bytes when the password holds prohibited characters or code
    points unassigned in Unicode 3.2 (table A.1, e.g. emoji)."""
    chars = []
    for ch in password:
        if stringprep.in_table_c12(ch):
            chars.append(" ")
        elif not stringprep.in_table_b1(ch):
            chars.append(ch)
    prepared = unicodedata.normalize("NFKC", "".join(chars))
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(check(ch) for ch in prepared for check in prohibited):
        return password.encode("utf-8")
    # Bidirectional text: RandALCat text must start and end with RandALCat, and hold no LCat.
    if any(stringprep.in_table_d1(ch) for ch in prepared) and (
        not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
        or any(stringprep.in_table_d2(ch) for ch in prepared)
    ):
        return password.encode("utf-8")
    return prepared.encode("utf-8")


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _keys(password, salt, iterations):
    """(StoredKey, ServerKey) of ``password`` with this salt and iteration count."""
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(str(password)), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def verifier(password, salt, iterations):
    """The SCRAM-SHA-256 verifier of ``password`` with a given salt and iteration count (those
    of a stored verifier: this re-derives, it never makes a new one)."""
    stored_key, server_key = _keys(password, salt, iterations)
    return f"{PREFIX}{iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse(stored):
    """Split a stored verifier into (iterations, salt, StoredKey, ServerKey), the last three as
    bytes; None if it is not a well-formed SCRAM-SHA-256 verifier."""
    if not isinstance(stored, str) or not stored.startswith(PREFIX):
        return None
    try:
        params, keys = stored[len(PREFIX) :].split("$", 1)
        iterations, salt = params.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        iterations = int(iterations)
        decoded = [base64.b64decode(part, validate=True) for part in (salt, stored_key, server_key)]
    except (ValueError, binascii.Error):
        return None
    if iterations < 1 or not decoded[0] or any(len(key) != hashlib.sha256().digest_size for key in decoded[1:]):
        return None
    return (iterations, *decoded)


def matches(password, stored):
    """True if ``stored`` is a SCRAM verifier of ``password`` (its keys recomputed with the
    stored salt and iteration count, whoever made it: libpq, the server, another tool);
    False for md5 hashes, NULL, a malformed verifier, or another password."""
    parsed = parse(stored)
    if parsed is None:
        return False
    iterations, salt, stored_key, server_key = parsed
    derived = b"".join(_keys(password, salt, iterations))
    return hmac.compare_digest(derived, stored_key + server_key)
