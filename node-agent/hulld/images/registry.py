"""A client for the OCI distribution API: manifests and blobs, with token and basic authentication.

One ``Session`` per pull. It tries the configured mirrors first, then the registry itself; answers a 401 the
way the registry asks (``WWW-Authenticate: Bearer`` → a token from its realm, ``Basic`` → the credentials);
and never returns a byte it has not checked: ``manifest`` verifies the body against the digest it was asked
for (or the one the registry claims), ``fetch_blob`` streams to a file while hashing and checks the digest and
the size before the caller sees the file.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import IO, Any

import urllib3

from hulld import errors
from hulld.config import Config
from hulld.images.reference import Reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
CHUNK = 1 << 20
TIMEOUT = urllib3.Timeout(connect=10, read=60)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """From CRI's AuthConfig: user and password, or a ready token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def from_auth(
        cls, username: str, password: str, auth: str, identity_token: str, registry_token: str
    ) -> Credentials:
        if auth and not username:
            try:
                username, _, password = base64.b64decode(auth).decode().partition(":")
            except ValueError as error:
                raise errors.InvalidArgument("AuthConfig.auth is not base64 of user:password") from error
        return cls(username, password, identity_token, registry_token)


@dataclasses.dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class Session:
    def __init__(self, config: Config, reference: Reference, credentials: Credentials, pools: Pools) -> None:
        self.reference = reference
        self.credentials = credentials
        entry = config.registry_for(reference.name)
        hosts = [*(entry.mirrors if entry else ()), reference.host]
        insecure = entry.insecure if entry else False
        # Docker Hub's API lives elsewhere than its name.
        self.endpoints = [
            ("http" if insecure else "https", "registry-1.docker.io" if h == "docker.io" else h) for h in hosts
        ]
        self.pool = pools.insecure if insecure else pools.verified
        self._authorization: dict[str, str] = {}  # endpoint host → Authorization header

    def _request(self, path: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        failures = []
        for scheme, host in self.endpoints:
            url = f"{scheme}://{host}/v2/{self.reference.repository}/{path}"
            try:
                response = self._send(url, host, headers)
            except urllib3.exceptions.HTTPError as error:
                failures.append(f"{host}: {error}")
                continue
            if response.status == 200:
                return response
            body = response.read(4096).decode(errors="replace")
            response.release_conn()
            if response.status == 404:
                failures.append(f"{host}: not found")
                continue
            failures.append(f"{host}: HTTP {response.status} {body.strip()[:200]}")
        detail = "; ".join(failures)
        if all(failure.endswith("not found") for failure in failures):
            raise errors.NotFound(f"{self.reference}: {detail}")
        raise errors.Unavailable(f"pulling {self.reference}: {detail}")

    def _send(self, url: str, host: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        sent = {**headers, **({"Authorization": self._authorization[host]} if host in self._authorization else {})}
        response = self._open(url, sent)
        if response.status != 401 or host in self._authorization:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        response.drain_conn()
        response.release_conn()
        self._authorization[host] = self._authenticate(challenge)
        return self._open(url, {**headers, "Authorization": self._authorization[host]})

    def _open(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        return self.pool.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            timeout=TIMEOUT,
            redirect=True,
            retries=urllib3.Retry(total=3, redirect=5, raise_on_status=False),
        )

    def _basic(self) -> str:
        if not self.credentials.username:
            raise errors.FailedPrecondition(f"{self.reference.host} requires credentials and none were given")
        token = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(token).decode()

    def _authenticate(self, challenge: str) -> str:
        scheme, params = _challenge(challenge)
        if scheme == "basic":
            return self._basic()
        if scheme != "bearer" or "realm" not in params:
            raise errors.Unavailable(f"{self.reference.host}: unsupported authentication challenge {challenge!r}")
        if self.credentials.registry_token:
            return f"Bearer {self.credentials.registry_token}"
        query: dict[str, str] = {key: params[key] for key in ("service", "scope") if key in params}
        query.setdefault("scope", f"repository:{self.reference.repository}:pull")
        headers = {"Authorization": self._basic()} if self.credentials.username else {}
        url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        response = self.pool.request("GET", url, headers=headers, timeout=TIMEOUT)
        if response.status != 200:
            raise errors.FailedPrecondition(
                f"{self.reference.host}: token request refused (HTTP {response.status}); check the credentials"
            )
        answer = json.loads(response.data)
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise errors.Unavailable(f"{self.reference.host}: token endpoint answered without a token")
        return f"Bearer {token}"

    # --- what callers use -------------------------------------------------------------------------------------

    def manifest(self, reference: str, limit: int) -> Manifest:
        """The manifest (or index) at a tag or digest, its bytes checked against the digest; one larger than
        ``limit`` bytes is refused before it is read whole."""
        response = self._request(f"manifests/{reference}", {"Accept": ACCEPT})
        try:
            body = response.read(limit + 1, decode_content=True)
        finally:
            response.release_conn()
        if len(body) > limit:
            raise errors.FailedPrecondition(
                f"{self.reference}: manifest larger than {limit} bytes (images.max_manifest_bytes)"
            )
        digest = sha256(body)
        expected = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise errors.Unavailable(f"{self.reference}: manifest digest mismatch (expected {expected}, got {digest})")
        data = json.loads(body)
        if data.get("schemaVersion") == 1:
            raise errors.FailedPrecondition(f"{self.reference}: Docker schema 1 manifests are not supported")
        # mediaType is optional in OCI manifests; the Content-Type header, then the shape, decide.
        media_type = data.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*MANIFEST_TYPES, *INDEX_TYPES):
            media_type = OCI_INDEX if "manifests" in data else OCI_MANIFEST
        return Manifest(digest=digest, media_type=media_type, body=body)

    def fetch_blob(self, digest: str, size: int, target: IO[bytes], progress: Callable[[int], None]) -> None:
        """Stream a blob into ``target``; raise unless its size and sha256 match."""
        response = self._request(f"blobs/{digest}", {})
        hasher = hashlib.sha256()
        received = 0
        try:
            for chunk in response.stream(CHUNK, decode_content=False):
                hasher.update(chunk)
                target.write(chunk)
                received += len(chunk)
                progress(len(chunk))
                if received > size:
                    break
        finally:
            response.release_conn()
        if received != size or "sha256:" + hasher.hexdigest() != digest:
            raise errors.Unavailable(
                f"{self.reference}: blob {digest} failed verification ({received} bytes, expected {size})"
            )


class Pools:
    """HTTP connection pools shared by all pulls: one that verifies TLS, one for registries marked insecure."""

    def __init__(self) -> None:
        self.verified = urllib3.PoolManager(num_pools=16, maxsize=4)
        self.insecure = urllib3.PoolManager(num_pools=16, maxsize=4, cert_reqs="CERT_NONE")
