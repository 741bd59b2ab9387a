"""s3rver (npm), an S3 server that accepts ``If-None-Match: *`` and overwrites anyway: a store rhei_lake must refuse.

Installed with ``npm install s3rver`` into the suite's tool cache when Node.js
and npm are present (CI installs them; see .ci/run), and run as a subprocess
on a free loopback port with one bucket.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.moto_server import free_port, stop_process
from tests.support.tool_cache import ToolUnavailable, cached, run_step, skip_or_fail

VERSION = "3.7.1"
BUCKET = "probe-bucket"
KEY = "S3RVER"  # s3rver's fixed credentials


@dataclass
class S3rver:
    process: subprocess.Popen
    endpoint: str

    def storage_options(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        stop_process(self.process)


def _install() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        skip_or_fail("s3rver needs Node.js and npm, which are not installed")

    def build(folder: Path) -> None:
        folder.mkdir(parents=True)
        run_step([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent", f"s3rver@{VERSION}"])

    try:
        return cached(f"s3rver-{VERSION}", build) / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    except ToolUnavailable as exc:
        skip_or_fail(f"s3rver could not be installed from npm (offline?): {exc}")
        raise


def start_s3rver(data_dir: Path, timeout: float = 30.0) -> S3rver:
    script = _install()
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("node") or "node",
            str(script),
            "-d",
            str(data_dir),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "--silent",
            "--configure-bucket",
            BUCKET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"s3rver exited with {process.returncode}: {process.stderr.read().decode()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return S3rver(process, f"http://127.0.0.1:{port}")
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("s3rver did not start in time")
