"""Make the local platform's certificates: a small CA and one short-lived certificate per
identity (``xds_server.tls.Role``), offline, with the ``cryptography`` package.

    python -m xds_server.certs --out build/certs          # idempotent: keeps valid ones
    python -m xds_server.certs --out build/certs --force  # new CA and certificates

Short-lived on purpose (7 days by default): nothing revokes a local certificate, so expiry is the
only way a copied key stops working.  ``ensure_certs`` keeps a directory whose certificates are
all valid for longer than ``renew_within``, chain to its CA and match their keys and names, and
otherwise makes everything anew (a new CA invalidates every old certificate at once; the CA's
key is dropped once they are signed, so it is never on disk).  Private keys are written 0600 in a 0700 directory; files are replaced atomically, so a process that
reads them never sees half a file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xds_server.tls import CertDir, MtlsConfigError, Role

DEFAULT_VALID_DAYS = 7.0
DEFAULT_RENEW_WITHIN_DAYS = 1.0
CA_NAME = "tmas local CA"
# Every server certificate also names loopback, so a plain TLS client dialling 127.0.0.1 can verify it.
LOOPBACK_SANS: tuple[x509.GeneralName, ...] = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
# Backdated a little: a certificate made this second must verify on a clock a few seconds behind.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertInfo:
    name: str  # "ca" or a role
    subject: str
    names: tuple[str, ...]  # subject alternative names as "DNS:..." / "IP:..."
    usage: str  # "CA", "serverAuth" or "clientAuth"
    not_after: dt.datetime

    def left(self, now: dt.datetime) -> dt.timedelta:
        return self.not_after - now


@dataclass(frozen=True)
class CertReport:
    out: Path
    renewed: bool
    reason: str  # why they were made anew ("" when kept)
    certs: tuple[CertInfo, ...]

    def expires(self) -> dt.datetime:
        return min(c.not_after for c in self.certs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; never added any
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tmas local platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime,
             valid: dt.timedelta) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + valid)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _make_all(cert_dir: CertDir, now: dt.datetime, valid: dt.timedelta) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = _name(f"{CA_NAME} {now:%Y-%m-%d %H:%M}")
    ca_cert = (_builder(ca_subject, ca_subject, ca_key.public_key(), now, valid)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    files: list[tuple[Path, bytes, int]] = []  # the CA key is never written (CertDir says why)
    for role in Role:
        key = ec.generate_private_key(ec.SECP256R1())
        identity = cert_dir.identity(role)
        sans: list[x509.GeneralName] = [x509.DNSName(role.server_name)]
        if role.is_server:
            sans += LOOPBACK_SANS
        usage = ExtendedKeyUsageOID.SERVER_AUTH if role.is_server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (_builder(_name(role.server_name), ca_subject, key.public_key(), now, valid)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256()))
        files += [(identity.key, _key_pem(key), 0o600), (identity.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)]
    # The CA certificate last: until it is replaced, a reader still finds the old, matching set.
    files.append((cert_dir.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644))
    for path, data, mode in files:
        _write(path, data, mode)


def _info(name: str, cert: x509.Certificate) -> CertInfo:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(f"DNS:{n}" for n in sans.get_values_for_type(x509.DNSName)) + tuple(
            f"IP:{n}" for n in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        names = ()
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usage = ",".join(e._name for e in ekus)
    except x509.ExtensionNotFound:
        usage = "CA"
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(name, str(cn[0].value) if cn else cert.subject.rfc4514_string(), names, usage,
                    cert.not_valid_after_utc)


def inspect(out: Path, now: dt.datetime | None = None,
            renew_within: dt.timedelta = dt.timedelta(days=DEFAULT_RENEW_WITHIN_DAYS)) -> tuple[list[CertInfo], str]:
    """(what the directory holds, the first reason it cannot be kept or "")."""
    now = now or _now()
    cert_dir = CertDir(out)
    try:
        cert_dir.check()
    except MtlsConfigError as e:
        return [], "none yet" if not list(out.glob("*.crt")) else str(e).split(";")[0]
    ca = x509.load_pem_x509_certificate(cert_dir.ca_cert.read_bytes())
    infos = [_info("ca", ca)]
    problem = ""
    if ca.not_valid_after_utc - now <= renew_within:
        problem = f"the CA expires at {ca.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    for role in Role:
        identity = cert_dir.identity(role)
        try:
            cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
            key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
        except ValueError as e:
            problem = problem or f"{identity.cert} or its key cannot be read: {e}"
            continue
        info = _info(role.value, cert)
        infos.append(info)
        if problem:
            continue
        if info.left(now) <= renew_within:
            problem = f"{role.value} expires at {info.not_after:%Y-%m-%d %H:%M} UTC"
        elif f"DNS:{role.server_name}" not in info.names:
            problem = f"{role.value} does not name {role.server_name}"
        elif key.public_key() != cert.public_key():
            problem = f"{identity.key} does not match {identity.cert}"
        elif identity.key.stat().st_mode & 0o077:
            problem = f"{identity.key} is readable by others (mode {identity.key.stat().st_mode & 0o777:o})"
        else:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                problem = f"{role.value} is not signed by {cert_dir.ca_cert}"
    return infos, problem


def ensure_certs(out: Path, *, valid_days: float = DEFAULT_VALID_DAYS,
                 renew_within_days: float = DEFAULT_RENEW_WITHIN_DAYS, force: bool = False,
                 now: dt.datetime | None = None) -> CertReport:
    """Keep ``out``'s certificates if they are all good for more than ``renew_within_days``;
    otherwise (or with ``force``) make a new CA and certificates valid for ``valid_days``."""
    if valid_days <= 0:
        raise ValueError(f"valid_days must be > 0, got {valid_days}")
    if not 0 <= renew_within_days < valid_days:
        raise ValueError(f"renew_within_days must be in [0, valid_days={valid_days}), got {renew_within_days}")
    now = now or _now()
    renew_within = dt.timedelta(days=renew_within_days)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    # One writer at a time: two platforms starting together would otherwise each make a set and
    # leave a mix of both (a certificate of one CA beside the other's).
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _, problem = inspect(out, now, renew_within)
        reason = "--force" if force else problem
        if reason:
            _make_all(CertDir(out), now, dt.timedelta(days=valid_days))
        infos, problem = inspect(out, now, renew_within)
    if problem:  # only a bug (or a clock far off) gets here
        raise MtlsConfigError(f"certificates just made in {out} are not usable: {problem}")
    return CertReport(out, bool(reason), reason, tuple(infos))


def status_line(out: Path, now: dt.datetime | None = None) -> str:
    """One line for ``make status``: when the running platform's certificates expire, or what is
    wrong with them (nothing reloads them: a running platform fails new handshakes after expiry)."""
    now = now or _now()
    infos, problem = inspect(out, now, renew_within=dt.timedelta(0))
    if problem:
        return f"mTLS: certificates in {out}: {problem}; run `make certs` and restart the platform"
    first = min(c.not_after for c in infos)
    days = (first - now).total_seconds() / 86400
    warn = "  (renew soon: `make certs`, then restart)" if days < DEFAULT_RENEW_WITHIN_DAYS else ""
    return f"mTLS: on, certificates in {out} valid until {first:%Y-%m-%d %H:%M} UTC ({days:.1f} days){warn}"


def describe(report: CertReport, now: dt.datetime | None = None) -> str:
    now = now or _now()
    state = f"made anew ({report.reason})" if report.renewed else "kept (valid)"
    lines = [f"certificates in {report.out}: {state}; the first expires {report.expires():%Y-%m-%d %H:%M} UTC"]
    for c in report.certs:
        days = c.left(now).total_seconds() / 86400
        lines.append(f"  {c.name:<11} {c.usage:<11} {days:5.1f} days left  {', '.join(c.names) or c.subject}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xds_server.certs", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/certs"), help="certificate directory (made 0700)")
    ap.add_argument("--valid-days", type=float, default=DEFAULT_VALID_DAYS, help="lifetime of new certificates")
    ap.add_argument("--renew-within-days", type=float, default=DEFAULT_RENEW_WITHIN_DAYS,
                    help="make new ones when any expires within this many days")
    ap.add_argument("--force", action="store_true", help="make a new CA and certificates even if valid")
    args = ap.parse_args(argv)
    try:
        report = ensure_certs(args.out, valid_days=args.valid_days, renew_within_days=args.renew_within_days,
                              force=args.force)
    except (ValueError, OSError) as e:
        print(f"python -m xds_server.certs: {e}", file=sys.stderr)
        return 2
    print(describe(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
