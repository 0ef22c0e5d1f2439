"""SCRAM-SHA-256 verifiers as PostgreSQL stores them in ``pg_authid.rolpassword``.

``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802 / RFC 7677), computed
on the minion so that the plain password never reaches the server, a log or a command line.
"""

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16
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


def verifier(password, salt=None, iterations=ITERATIONS):
    """Return the SCRAM-SHA-256 verifier of ``password`` (random salt unless given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(str(password)), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"{PREFIX}{iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse(stored):
    """Split a stored verifier into (iterations, salt bytes); None if it is not SCRAM."""
    if not stored or not stored.startswith(PREFIX):
        return None
    try:
        params, _keys = stored[len(PREFIX) :].split("$", 1)
        iterations, salt = params.split(":", 1)
        return int(iterations), base64.b64decode(salt, validate=True)
    except ValueError:
        return None


def matches(password, stored):
    """True if ``stored`` is a SCRAM verifier of ``password`` (recomputed with its own salt
    and iteration count); False for md5 hashes, NULL, or another password."""
    parsed = parse(stored)
    if parsed is None:
        return False
    iterations, salt = parsed
    return hmac.compare_digest(verifier(password, salt=salt, iterations=iterations), stored)
