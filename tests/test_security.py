"""TLS, mutual TLS and bearer tokens: handshakes that succeed and those that are refused."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest

import splitrt
from splitrt.edge.client import FrameFailed
from splitrt.edge.connection import ConnectionOptions

from .certs import issue, make_ca
from .conftest import TINY_CLASSIFIER as SPEC
from .conftest import TINY_CLASSIFIER_TOML as CONFIG
from .conftest import start_server, stop_server

TOKEN = "s3cret-token-for-tests"
IMAGE = np.full((48, 64, 3), 120, dtype=np.uint8)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = make_ca(directory, "test-ca"), make_ca(directory, "rogue-ca")
    return {
        "dir": directory,
        "ca": str(ca[2]),
        "rogue_ca": str(rogue[2]),
        "server": [str(p) for p in issue(directory, ca, "server", server=True)],
        "client": [str(p) for p in issue(directory, ca, "client", server=False)],
        "rogue_client": [str(p) for p in issue(directory, rogue, "rogue-client", server=False)],
    }


def _secure(ca, cert=None, key=None):
    def factory(address):
        read = lambda p: open(p, "rb").read() if p else None  # noqa: E731
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(read(ca), read(key), read(cert)))

    return factory


@pytest.fixture(scope="module")
def tls_server(pki, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    (directory / "models.toml").write_text(CONFIG)
    cert, key = pki["server"]
    server = start_server(
        directory / "models.toml",
        directory / "server.log",
        extra_args=["--tls-cert", cert, "--tls-key", key],
        channel_factory=_secure(pki["ca"]),
    )
    yield server
    assert stop_server(server) == 0


@pytest.fixture(scope="module")
def mtls_token_server(pki, tmp_path_factory):
    directory = tmp_path_factory.mktemp("mtls")
    (directory / "models.toml").write_text(CONFIG)
    (directory / "tokens").write_text(f"# accepted tokens\n{TOKEN}\n")
    cert, key = pki["server"]
    server = start_server(
        directory / "models.toml",
        directory / "server.log",
        extra_args=[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            pki["ca"],
            "--auth-token-file",
            str(directory / "tokens"),
        ],
        channel_factory=_secure(pki["ca"], *pki["client"]),
    )
    yield server
    assert stop_server(server) == 0


def _detect(server, **connection):
    with splitrt.connect(
        server.address,
        SPEC,
        split="layer1",
        codec="int8",
        on_failure="drop",
        timeout_s=10,
        connection=ConnectionOptions(**connection),
    ) as client:
        return client.detect(IMAGE).raise_for_error()  # a failed frame is a result; raise it here


def test_tls_handshake_and_refusals(tls_server, pki):
    assert _detect(tls_server, tls_ca=pki["ca"]).ok
    with pytest.raises(FrameFailed, match="UNAVAILABLE"):
        _detect(tls_server)  # plaintext to a TLS port
    with pytest.raises(FrameFailed, match="UNAVAILABLE"):
        _detect(tls_server, tls_ca=pki["rogue_ca"])  # server certificate not trusted


def test_mutual_tls_and_tokens(mtls_token_server, pki):
    cert, key = pki["client"]
    ok = _detect(mtls_token_server, tls_ca=pki["ca"], tls_cert=cert, tls_key=key, token=TOKEN)
    assert ok.ok and ok.logits.shape == (1, 10)
    with pytest.raises(FrameFailed, match="UNAVAILABLE"):
        _detect(mtls_token_server, tls_ca=pki["ca"], token=TOKEN)  # no client certificate
    rogue_cert, rogue_key = pki["rogue_client"]
    with pytest.raises(FrameFailed, match="UNAVAILABLE"):
        _detect(mtls_token_server, tls_ca=pki["ca"], tls_cert=rogue_cert, tls_key=rogue_key, token=TOKEN)
    with pytest.raises(FrameFailed, match="UNAUTHENTICATED"):
        _detect(mtls_token_server, tls_ca=pki["ca"], tls_cert=cert, tls_key=key)  # no token
    with pytest.raises(FrameFailed, match="UNAUTHENTICATED"):
        _detect(mtls_token_server, tls_ca=pki["ca"], tls_cert=cert, tls_key=key, token="wrong")
    assert TOKEN not in mtls_token_server.log(), "tokens must never be logged"


def test_edge_cli_with_mtls_and_a_token_file(mtls_token_server, pki, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cert, key = pki["client"]
    base = [
        sys.executable,
        "-m",
        "splitrt.edge.cli",
        "synthetic:2",
        "--server",
        mtls_token_server.address,
        "--model",
        "cls=resnet18",
        "--model-option",
        "num_classes=10",
        "--model-option",
        "image_size=64",
        "--split",
        "layer2",
        "--codec",
        "fp16",
        "--out",
        str(tmp_path / "o.jsonl"),
        "--wait-ready",
        "10",
        "--tls-ca",
        pki["ca"],
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]
    good = subprocess.run([*base, "--auth-token-file", str(token_file)], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert "answered: 2  errors: 0" in good.stdout
    refused = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 3 and "UNAUTHENTICATED" in refused.stderr
