"""``rh flight`` as a user runs it: a process serving the lake until interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.flight.flight_clients import query

TOKEN = "cli-token-1234"


def _rh(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rhei_lake.cli.app", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_rh_flight_serves_until_interrupted(shop_lake):
    env = {"RHEI_FLIGHT_TOKEN": TOKEN, **shop_lake.options}
    process = _rh("flight", "--storage", shop_lake.url, "--port", "0", env=env)
    try:
        banner = process.stdout.readline()
        match = re.search(r"at (grpc://127\.0\.0\.1:\d+) \(read-only, auth: bearer token, TLS: off\)", banner)
        assert match, banner + process.stderr.read()
        location = match.group(1)
        assert TOKEN not in banner
        got = query(location, "SELECT count(*) AS n FROM orders", token=TOKEN)
        assert got.to_pylist() == [{"n": 295}]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped" in out
    assert TOKEN not in out + err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["flight"], "needs a lake: pass --storage"),
        (["flight", "--storage", "memory://", "--tls-cert", "c.pem"], "set both or neither"),
        (["flight", "--storage", "memory://", "--port", "99999"], "flight_port"),
        (["flight", "--storage", "memory://", "--compression", "gzip"], "flight_compression"),
    ],
)
def test_rh_flight_bad_options_fail_in_one_line(args, message):
    process = _rh(*args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("shop_lake", ["local"], indirect=True)
def test_rh_flight_stops_on_ctrl_c_even_with_a_client_that_stopped_reading(shop_lake):
    process = _rh("flight", "--storage", shop_lake.url, "--port", "0")
    client = None
    try:
        location = re.search(r"at (grpc://\S+)", process.stdout.readline()).group(1)
        client = subprocess.Popen(
            [sys.executable, "-m", "tests.flight.stalled_client", location], stdout=subprocess.PIPE, text=True
        )
        assert client.stdout.readline().strip() == "stalled"
        time.sleep(1.0)  # the server fills the stalled client's buffers and blocks writing to it
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        for proc in (process, client):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert process.returncode == 0, err
    assert "streams to clients that stopped reading were abandoned" in out
