# SPDX-License-Identifier: Apache-2.0
"""Checking each server's certificate and key at render time, as libpq will check them.

A standby's own certificate is only checked when someone connects to it, which may be the
first time after a switchover made it the primary. So the plan checks every
``tls:hosts:<id>`` pair up front: PEM that parses, a key that matches its certificate, a
certificate signed by ``tls:ca_cert``, valid now, naming the host's address, and fit for
a server. It follows libpq's (OpenSSL's) rules rather than a stricter web PKI policy
(``cryptography.x509.verification`` refuses certificates without an authority key
identifier, which libpq accepts).

Functions append ``"pillar:key: message"`` to ``errors`` (and to ``warnings`` for a
certificate near its expiry). Pure logic; runs on the minion's Python (3.9 on Debian 11).
"""

import datetime
import ipaddress
import os
import runpy

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_sibling = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg_replication_sibling.py"))["load"]
KEY = _sibling("pg_replication_schema").KEY
SERVER_ROLES = ("primary", "standby")


def check(tls, hosts, errors, warnings, now=None, roles=SERVER_ROLES, also=()):
    """Check every server's (every host's of ``roles``) ``tls:hosts`` certificate and key,
    and those of the hosts ``also`` names (the poolers), against ``tls:ca_cert`` and the
    host's address. ``tls:expiry_warning_days`` sets when a coming expiry warns."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ca = _certificate(tls["ca_cert"], f"{KEY}:tls:ca_cert", errors)
    if ca is None:
        return
    margin = datetime.timedelta(days=int(tls.get("expiry_warning_days", 30)))
    _check_dates(ca, f"{KEY}:tls:ca_cert", errors, warnings, now, margin)
    for host_id, pair in sorted((tls.get("hosts") or {}).items()):
        host = hosts.get(str(host_id))
        if host and (host["role"] in roles or host["id"] in also):
            _check_pair(pair, host, ca, f"{KEY}:tls:hosts:{host_id}", errors, warnings, now, margin)


def check_pooler_vip(tls, hosts, vip, errors):
    """PgBouncer aimed at the VIP verifies (verify-full) whichever server holds it against
    the VIP: every server's certificate must name it too."""
    for host_id, pair in sorted((tls.get("hosts") or {}).items()):
        host = hosts.get(str(host_id))
        if not (host and host["role"] in SERVER_ROLES):
            continue
        cert = _certificate(pair.get("cert"), f"{KEY}:tls:hosts:{host_id}:cert", [])
        fault = cert is not None and _names(cert, vip)
        if fault:
            errors.append(
                f"{KEY}:pooler:target: vip with TLS: PgBouncer verifies the primary's certificate against"
                f" the VIP, and {KEY}:tls:hosts:{host_id}:cert {fault}; add {vip} to every server's"
                " subjectAltName or use target: primary"
            )


def _check_pair(pair, host, ca, key, errors, warnings, now, margin):
    cert = _certificate(pair.get("cert"), f"{key}:cert", errors)
    private_key = _private_key(pair.get("key"), f"{key}:key", errors)
    if cert is None:
        return
    if private_key is not None and _spki(private_key.public_key()) != _spki(cert.public_key()):
        errors.append(f"{key}:key: does not match its certificate ({key}:cert)")
    faults = (_signed_by(cert, ca), _names(cert, host["address"]), _server_usage(cert))
    errors.extend(f"{key}:cert: {fault}" for fault in faults if fault)
    _check_dates(cert, f"{key}:cert", errors, warnings, now, margin)


def _check_dates(cert, key, errors, warnings, now, margin):
    """An error unless ``cert`` is valid ``now``; a warning when it expires within ``margin``."""
    starts, expires = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < starts:
        errors.append(f"{key}: is not valid before {starts:%Y-%m-%d %H:%M} UTC")
    elif now > expires:
        errors.append(f"{key}: expired on {expires:%Y-%m-%d %H:%M} UTC")
    elif expires < now + margin:
        warnings.append(f"{key}: expires on {expires:%Y-%m-%d %H:%M} UTC, in {(expires - now).days} day(s)")


def _certificate(pem, key, errors):
    try:
        return x509.load_pem_x509_certificate(str(pem).encode())
    except ValueError as exc:
        errors.append(f"{key}: is not a PEM certificate ({_first_line(exc)})")
        return None


def _private_key(pem, key, errors):
    try:
        return serialization.load_pem_private_key(str(pem).encode(), password=None)
    except TypeError:
        errors.append(f"{key}: is encrypted; PostgreSQL needs the key without a passphrase")
    except (ValueError, UnsupportedAlgorithm) as exc:
        errors.append(f"{key}: is not a PEM private key ({_first_line(exc)})")
    return None


def _first_line(exc):
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _signed_by(cert, ca):
    """Why ``cert`` does not verify against ``ca`` (None when it does)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        issuer, authority = cert.issuer.rfc4514_string(), ca.subject.rfc4514_string()
        return f"is not signed by {KEY}:tls:ca_cert (issuer {issuer}, CA {authority})"
    return None


def _names(cert, address):
    """Why ``cert`` does not name ``address`` as libpq's verify-full matches it: the
    subjectAltName's IP addresses or DNS names, else (no such entries) the common name."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
        dns = alt.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        ips, dns = [], []
    try:
        ip = str(ipaddress.ip_address(address))
    except ValueError:
        ip = None
    if ips or dns:
        if (ip in ips) if ip else any(_dns_match(name, address) for name in dns):
            return None
        return f"does not name {address} in subjectAltName (it names {', '.join(ips + dns)})"
    common = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if address in common or (ip is None and any(_dns_match(name, address) for name in common)):
        return None
    return f"does not name {address} (no subjectAltName; common name {', '.join(common) or 'none'})"


def _dns_match(pattern, name):
    """A DNS name of a certificate against ``name``, with libpq's leftmost-label wildcard."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in name and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def _server_usage(cert):
    """Why ``cert`` is not fit for a TLS server (None when it is)."""
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "is a CA certificate, not a server's"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.digital_signature or usage.key_encipherment):
            return "key usage allows neither digitalSignature nor keyEncipherment (a TLS server needs one)"
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in purposes:
            return "extended key usage does not include serverAuth"
    except x509.ExtensionNotFound:
        pass
    return None
