"""A real Prometheus server (Debian's package) scraping fixed targets, queried through its HTTP API."""

from __future__ import annotations

import dataclasses
import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kubehull_harness import processes

BINARY = "prometheus"


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    targets: Sequence[str]
    """``host:port``"""
    path: str = "/metrics"


@dataclasses.dataclass
class Prometheus:
    url: str
    process: processes.ManagedProcess

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:  # noqa: S310 - http on loopback
            body = json.load(response)
        if body.get("status") != "success":
            raise processes.ProcessError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self._get("/api/v1/query", query=expression)
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def stop(self) -> None:
        self.process.stop()


def start(
    work_dir: Path,
    log_dir: Path,
    jobs: Sequence[Job],
    labels: Mapping[str, str] | None = None,
    interval: str = "2s",
) -> Prometheus:
    """Scrape ``jobs``; ``labels`` are added to every target."""
    binary = shutil.which(BINARY)
    if binary is None:
        raise processes.ProcessError("prometheus is not installed (Debian package prometheus)")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job.name,
                "metrics_path": job.path,
                "static_configs": [{"targets": list(job.targets), "labels": dict(labels or {})}],
            }
            for job in jobs
        ],
    }
    config_path = work_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = processes.free_port()
    process = processes.ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_dir,
    )
    served = Prometheus(url=f"http://127.0.0.1:{port}", process=process)
    try:
        process.wait_ready(lambda: served._get("/api/v1/status/buildinfo"), 60, "serving its API")
    except Exception:
        process.stop()
        raise
    return served
