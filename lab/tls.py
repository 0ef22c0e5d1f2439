"""A throw-away certificate authority for the lab: one CA, and a certificate per server with
its address (and minion id) in subjectAltName, as ``pg_replication:tls`` takes them."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CertificateAuthority:
    def __init__(self, common_name="pg_replication lab CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self):
        return _pem_cert(self.cert)

    def server(self, name, address, valid=(-1 / 24, 365), purpose=ExtendedKeyUsageOID.SERVER_AUTH, also=()):
        """``{"cert": PEM, "key": PEM}`` for server ``name`` at IP ``address`` (and the IP
        addresses ``also``), valid from ``valid[0]`` to ``valid[1]`` days from now, for
        ``purpose``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in (address, *also)]
        alt = x509.SubjectAlternativeName([*ips, x509.DNSName(name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=valid[0]))
            .not_valid_after(now + datetime.timedelta(days=valid[1]))
            .add_extension(alt, critical=False)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return {"cert": _pem_cert(cert), "key": _pem_key(key)}


def tls_pillar(lab, servers, ca=None):
    """``pg_replication:tls`` for ``servers`` of ``lab``, signed by ``ca`` (a new one by default)."""
    ca = ca or CertificateAuthority()
    return {"ca_cert": ca.pem, "hosts": {name: ca.server(name, lab[name].address) for name in servers}}
