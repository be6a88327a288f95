"""The local certificates: made offline, kept while valid, made anew when they would not do,
keys private, roles kept apart by key usage and name."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from xds_server.certs import ensure_certs, inspect, main, status_line
from xds_server.tls import CertDir, MtlsConfigError, Role


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def certs(tmp_path) -> CertDir:
    ensure_certs(tmp_path / "certs")
    return CertDir(tmp_path / "certs")


def test_private_keys_are_0600_in_a_0700_directory(certs):
    assert stat.S_IMODE(certs.root.stat().st_mode) == 0o700
    keys = sorted(certs.root.glob("*.key"))
    assert [k.name for k in keys] == ["envoy.key", "triton.key", "xds-server.key"]  # no CA key on disk
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert not list(certs.root.glob(".*tmp*")), "a temporary file was left behind"


def test_a_second_run_keeps_valid_certificates(certs):
    before = _files(certs.root)
    report = ensure_certs(certs.root)
    assert not report.renewed and report.reason == ""
    assert _files(certs.root) == before


def test_certificates_expiring_within_the_renewal_window_are_made_anew(certs):
    before = _files(certs.root)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=6.5)
    report = ensure_certs(certs.root, now=later)
    assert report.renewed and "expires" in report.reason
    assert _files(certs.root)["ca.crt"] != before["ca.crt"]
    assert report.expires() > later + dt.timedelta(days=6)


def test_force_makes_a_new_ca(certs):
    before = _files(certs.root)
    assert ensure_certs(certs.root, force=True).renewed
    assert _files(certs.root)["ca.crt"] != before["ca.crt"]


def test_a_certificate_of_another_ca_is_replaced(certs, tmp_path):
    ensure_certs(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "envoy.crt", certs.root / "envoy.crt")
    shutil.copy(tmp_path / "other" / "envoy.key", certs.root / "envoy.key")
    _, problem = inspect(certs.root)
    assert "envoy is not signed by" in problem
    assert ensure_certs(certs.root).renewed
    assert inspect(certs.root)[1] == ""


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d.root / "triton.key").unlink(), "triton.key is missing"),
    (lambda d: (d.root / "ca.crt").unlink(), "ca.crt is missing"),
    (lambda d: (d.root / "envoy.key").chmod(0o644), "readable by others"),
    (lambda d: shutil.copy(d.root / "triton.key", d.root / "envoy.key"), "does not match"),
    (lambda d: (d.root / "xds-server.crt").write_text("not a certificate"), "cannot be read"),
], ids=["missing-key", "missing-ca", "key-mode-644", "key-of-another-cert", "garbage-cert"])
def test_a_damaged_directory_is_detected_and_made_anew(certs, damage, expected):
    damage(certs)
    _, problem = inspect(certs.root)
    assert expected in problem
    report = ensure_certs(certs.root)
    assert report.renewed and expected in report.reason
    assert inspect(certs.root)[1] == ""


def test_roles_are_kept_apart_by_key_usage_and_name(certs):
    usage = {}
    for role in Role:
        cert = _cert(certs.identity(role).cert)
        usage[role] = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert role.server_name in names.get_values_for_type(x509.DNSName)
        cert.verify_directly_issued_by(_cert(certs.ca_cert))
    assert usage[Role.ENVOY] == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert usage[Role.TRITON] == usage[Role.XDS_SERVER] == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca = _cert(certs.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_certificates_live_seven_days_by_default(certs):
    now = dt.datetime.now(dt.UTC)
    for role in Role:
        cert = _cert(certs.identity(role).cert)
        assert dt.timedelta(days=6.9) < cert.not_valid_after_utc - now <= dt.timedelta(days=7)
        assert cert.not_valid_before_utc < now  # backdated a little for clock skew


@pytest.mark.parametrize("kwargs, message", [
    ({"valid_days": 0}, "valid_days must be > 0"),
    ({"valid_days": 1, "renew_within_days": 1}, "renew_within_days must be in"),
    ({"renew_within_days": -1}, "renew_within_days must be in"),
], ids=["zero-lifetime", "renew-window-as-long-as-life", "negative-window"])
def test_impossible_lifetimes_are_refused_naming_the_setting(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ensure_certs(tmp_path / "certs", **kwargs)


def test_an_identity_names_the_missing_file_and_the_command_that_makes_it(tmp_path):
    with pytest.raises(MtlsConfigError, match=r"ca\.crt is missing.*python -m xds_server\.certs"):
        CertDir(tmp_path).identity(Role.ENVOY).check()


def test_the_cli_prints_each_expiry_and_refuses_bad_arguments(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "made anew" in out and out.count("days left") == 4
    assert main(["--out", str(tmp_path / "c")]) == 0
    assert "kept (valid)" in capsys.readouterr().out
    assert main(["--out", str(tmp_path / "c"), "--valid-days", "0"]) == 2
    assert "valid_days must be > 0" in capsys.readouterr().err


def test_platforms_starting_together_end_with_one_consistent_set(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        reports = list(pool.map(lambda _: ensure_certs(tmp_path / "shared"), range(6)))
    assert sum(r.renewed for r in reports) == 1  # the others found the first one's set valid
    assert inspect(tmp_path / "shared")[1] == ""


def test_the_status_line_says_when_the_certificates_expire_and_when_to_renew(certs):
    now = dt.datetime.now(dt.UTC)
    assert "valid until" in status_line(certs.root, now) and "renew soon" not in status_line(certs.root, now)
    assert "renew soon" in status_line(certs.root, now + dt.timedelta(days=6.5))
    expired = status_line(certs.root, now + dt.timedelta(days=8))
    assert "expires at" in expired and "run `make certs` and restart" in expired
    (certs.root / "envoy.key").unlink()
    assert "envoy.key is missing" in status_line(certs.root, now)
