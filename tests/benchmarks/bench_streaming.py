"""hulld vs containerd 2.4: streaming (exec latency, exec and port-forward throughput); prints figures side by side.

    .venv/bin/python tests/benchmarks/bench_streaming.py [--execs 50] [--mib 64] [--only 'hulld runc' ...]

Each column is a runtime and one of its handlers, measured one after the other on the same machine, with the
same runc and runsc binaries, image and CNI configuration as bench_hulld.py (whose launchers it uses). One pod
per column runs busybox's httpd on port 7000 serving an N-byte file; everything goes through crictl, as a
client on the node would (the kubelet proxies kubectl's connection the same way), so crictl's own start is in
every figure on both sides:

- exec latency: ``crictl exec CONTAINER true``, ``--execs`` times, one after the other (p50, p90);
- exec out: ``crictl exec CONTAINER head -c N /dev/zero`` read to the end, MiB/s;
- exec in: ``crictl exec -i CONTAINER sh -c 'cat >/dev/null'`` fed N bytes, MiB/s;
- port-forward: ``crictl port-forward POD L:7000``, the N-byte file fetched over one connection, MiB/s (a
  download: gVisor's port-forward stalls when megabytes flow both ways at once, see docs/hulld.md); nan where
  nothing comes back (containerd connects in the pod's network namespace, which a gVisor pod does not use).

Targets (issue #13): exec latency p50 at most containerd's; throughput at least 0.8 x containerd's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cri_api.v1 import api_pb2 as cri

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.bench_hulld import (
    KUBELET_NAMESPACES,
    Column,
    Runtime,
    containerd_2_4,
    hulld,
    measure_columns,
    percentile,
)

from kubehull_harness import toolchain

WEB_PORT = 7000
MIB = 1024 * 1024


COLUMNS = (
    Column("hulld runc", hulld, "runc"),
    Column("hulld runsc", hulld, "runsc"),
    Column("ctrd2.4 runc", containerd_2_4, "runc"),
    Column("ctrd2.4 runsc", containerd_2_4, "runsc"),
)
PEERS = (("hulld runc", "ctrd2.4 runc"), ("hulld runsc", "ctrd2.4 runsc"))


def crictl(runtime: Runtime) -> list[str]:
    endpoint = f"unix://{runtime.socket}"
    return [str(toolchain.binary("crictl")), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}"]


def web_pod(runtime: Runtime, handler: str, image: str, size: int, logs: Path) -> tuple[str, str]:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"stream-{handler}", namespace="bench", uid=f"stream-{handler}"),
        hostname="stream",
        log_directory=str(logs / handler),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=KUBELET_NAMESPACES)
        ),
    )
    pod = runtime.runtime.RunPodSandbox(
        cri.RunPodSandboxRequest(config=config, runtime_handler=handler), timeout=120
    ).pod_sandbox_id
    make_file = f"mkdir /tmp/www && head -c {size} /dev/zero >/tmp/www/big"
    container = runtime.runtime.CreateContainer(
        cri.CreateContainerRequest(
            pod_sandbox_id=pod,
            sandbox_config=config,
            config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="web"),
                image=cri.ImageSpec(image=image),
                command=["sh", "-c", f"{make_file} && exec httpd -f -p {WEB_PORT} -h /tmp/www"],
                log_path="web.log",
            ),
        ),
        timeout=120,
    ).container_id
    runtime.runtime.StartContainer(cri.StartContainerRequest(container_id=container), timeout=120)
    return pod, container


def timed(argv: list[str], *, stdin: bytes | None = None) -> tuple[float, bytes]:
    """Seconds the command took, and the last bytes of its output (read to the end)."""
    started = time.perf_counter()
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors) as run,
    ):
        assert run.stdin is not None
        assert run.stdout is not None
        feeder = None
        if stdin is not None:
            feeder = concurrent.futures.ThreadPoolExecutor(1).submit(_feed, run.stdin, stdin)
        else:
            run.stdin.close()
        received, last = 0, b""
        while chunk := run.stdout.read(MIB):
            received, last = received + len(chunk), chunk[-100:]
        code = run.wait()
        errors.seek(0)
        assert code == 0, f"{argv} exited {code}: {errors.read().decode(errors='replace')[-2000:]}"
        if feeder is not None:
            feeder.result()
    return time.perf_counter() - started, str(received).encode() if stdin is None else last


def _feed(pipe: Any, data: bytes) -> None:
    pipe.write(data)
    pipe.close()


def port_forward_rate(runtime: Runtime, pod: str, size: int) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = int(probe.getsockname()[1])
    forwarder = subprocess.Popen(
        [*crictl(runtime), "port-forward", pod, f"{local}:{WEB_PORT}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", local), timeout=60)
                break
            except OSError:
                assert time.monotonic() < deadline, "crictl port-forward did not listen"
                time.sleep(0.1)
        with connection:
            started = time.perf_counter()
            connection.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            received = 0
            while chunk := connection.recv(MIB):
                received += len(chunk)
            elapsed = time.perf_counter() - started
        if received == 0:
            return math.nan  # containerd's port-forward cannot reach a gVisor pod's ports
        assert received > size, f"fetched {received} bytes of a {size}-byte file"
        return size / MIB / elapsed
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=20)


def measure(runtime: Runtime, handler: str, image: str, args: argparse.Namespace, logs: Path) -> dict[str, float]:
    size = args.mib * MIB
    pod, container = web_pod(runtime, handler, image, size, logs)
    client = crictl(runtime)
    timed([*client, "exec", container, "true"])  # the first one warms caches on both sides
    latencies = [timed([*client, "exec", container, "true"])[0] for _ in range(args.execs)]
    out_seconds, received = timed([*client, "exec", container, "head", "-c", str(size), "/dev/zero"])
    assert int(received) == size, f"exec out: {received!r} of {size} bytes"
    in_seconds, counted = timed([*client, "exec", "-i", container, "wc", "-c"], stdin=b"\0" * size)
    assert int(counted) == size, f"exec in: the command read {counted!r} of {size} bytes"
    results = {
        "exec p50": percentile(latencies, 0.5) * 1000,
        "exec p90": percentile(latencies, 0.9) * 1000,
        "exec mean": statistics.mean(latencies) * 1000,
        "exec out": args.mib / out_seconds,
        "exec in": args.mib / in_seconds,
        "port-forward": port_forward_rate(runtime, pod, size),
    }
    runtime.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    runtime.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    return results


UNITS = {"exec p50": "ms", "exec p90": "ms", "exec mean": "ms", "exec out": "MiB/s", "exec in": "MiB/s"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--execs", type=int, default=50, help="execs timed one after the other")
    parser.add_argument("--mib", type=int, default=64, help="MiB per throughput measurement")
    parser.add_argument("--only", nargs="*", default=[], help="only these columns (labels)")
    args = parser.parse_args()
    columns = [column for column in COLUMNS if not args.only or column.label in args.only]
    results = measure_columns(
        columns, lambda runtime, column, image, logs: measure(runtime, column.handler, image, args, logs)
    )
    report(results, args)
    return 0


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    labels = list(results)
    print("\n" + f"{'':<28}" + "".join(f"{label:>16}" for label in labels))
    for key in ("exec p50", "exec p90", "exec mean", "exec out", "exec in", "port-forward"):
        unit = UNITS.get(key, "MiB/s")
        title = f"{key} ({args.execs} execs)" if key.startswith("exec p") or key == "exec mean" else key
        print(f"{title:<28}" + "".join(f"{results[label][key]:>11.1f}{unit:>5}" for label in labels))
    print()
    for column, peer in PEERS:
        if column in results and peer in results:
            ours, theirs = results[column], results[peer]
            latency = ours["exec p50"] / theirs["exec p50"]
            rates = {key: ours[key] / theirs[key] for key in ("exec out", "exec in", "port-forward")}
            # A figure the peer could not produce (nan) is one it loses.
            met = latency <= 1.0 and all(rate >= 0.8 or math.isnan(rate) for rate in rates.values())
            shown = ", ".join(f"{key} {rate:.2f}" for key, rate in rates.items())
            print(
                f"{column} / {peer}: exec p50 {latency:.2f} (target <= 1), {shown} (target >= 0.8): "
                f"{'met' if met else 'NOT met'}"
            )


if __name__ == "__main__":
    sys.exit(main())
