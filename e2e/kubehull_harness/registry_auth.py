"""Registries that demand credentials, for testing pull authentication against the real registry server.

- ``basic``: Debian's docker-registry with an htpasswd file (bcrypt), answering ``WWW-Authenticate: Basic``.
- ``token``: docker-registry in token mode (``WWW-Authenticate: Bearer realm=...``) and a small token service
  here that checks the user's password and issues an ES256 JWT naming the granted repository actions, signed
  by a key whose certificate (``x5c``) chains to the CA the registry trusts — the Docker token protocol.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from kubehull_harness import pki, processes, registry

SERVICE = "kubehull-test-registry"
ISSUER = "kubehull-test-token-service"


@dataclasses.dataclass
class AuthRegistry:
    served: registry.Registry
    username: str
    password: str
    token_server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return self.served.host

    def stop(self) -> None:
        self.served.stop()
        if self.token_server is not None:
            self.token_server.shutdown()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _start(work_dir: Path, log_dir: Path, name: str, auth: dict[str, Any]) -> registry.Registry:
    host = f"127.0.0.1:{processes.free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "http": {"addr": host},
        "auth": auth,
        "storage": {"filesystem": {"rootdirectory": str(work_dir / "storage")}},
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.yml").write_text(yaml.safe_dump(config))
    binary = registry.REGISTRY_BINARY
    process = processes.ManagedProcess(name, [binary, "serve", work_dir / "config.yml"], log_dir)

    def answering() -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
        except urllib.error.HTTPError as error:
            return error.code == 401
        return False

    process.wait_ready(answering, 30, "asking for credentials")
    return registry.Registry(host=host, process=process)


def start_basic(work_dir: Path, log_dir: Path, username: str, password: str) -> AuthRegistry:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    (work_dir).mkdir(parents=True, exist_ok=True)
    (work_dir / "htpasswd").write_text(f"{username}:{hashed}\n")
    served = _start(
        work_dir,
        log_dir,
        "registry-basic-auth",
        {"htpasswd": {"realm": "kubehull-test", "path": str(work_dir / "htpasswd")}},
    )
    return AuthRegistry(served=served, username=username, password=password)


def start_token(work_dir: Path, log_dir: Path, username: str, password: str) -> AuthRegistry:
    work_dir.mkdir(parents=True, exist_ok=True)
    ca = pki.CertificateAuthority(work_dir / "pki", name="kubehull-test-token-ca")
    signer = ca.issue("token-signer", "token-signer")
    key = serialization.load_pem_private_key(signer.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    chain = [
        base64.b64encode(
            x509.load_pem_x509_certificate(signer.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        ).decode()
    ]

    def token(scope: str) -> str:
        """A JWT granting the scope asked for ("repository:NAME:pull,push")."""
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})  # the user may do it all
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": chain}
        claims = {
            "iss": ISSUER,
            "sub": username,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = utils.decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    class TokenHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            body = json.dumps({"token": token(query.get("scope", [""])[0])}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    served = _start(
        work_dir,
        log_dir,
        "registry-token-auth",
        {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(ca.cert_path)}},
    )
    return AuthRegistry(served=served, username=username, password=password, token_server=server)
