"""``rh compact`` as a batch job in its own process, knowing only the lake's S3 URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rhei_lake
from tests.support.oracle import assert_same_state, oltp_oracle

ROOT = Path(__file__).resolve().parents[2]


def test_compaction_job_in_a_separate_process_with_only_the_s3_url(s3_lake, tmp_path):
    url, options = s3_lake
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=3) as lake:
        lake.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
        lake.execute("CREATE TABLE mirrored_nothing (k TEXT PRIMARY KEY)")
        lake.register_table("orders")
        for i in range(30):
            lake.execute("INSERT INTO orders VALUES (?, ?, ?)", (i, f"c{i % 4}", i * 1.25))
            if i % 5 == 4:
                lake.execute("UPDATE orders SET total = total * 2 WHERE id = ?", (i - 2,))
                lake.execute("DELETE FROM orders WHERE id = ?", (i - 4,))
            lake.sync_now()
        history_before = lake.query("SELECT * FROM orders_history ORDER BY _rhei_seq")
        current_before = lake.query("SELECT * FROM orders ORDER BY id")

        # The job's whole world: the URL on the command line, credentials and endpoint in AWS_*.
        # It starts in an empty directory, far from the SQLite file.
        workdir = tmp_path / "elsewhere"
        workdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RHEI_"))}
        env.update(options)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        job = subprocess.run(
            [sys.executable, "-m", "rhei_lake.cli.app", "compact", "--storage", url, "--vacuum-retention", "0"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert job.returncode == 0, job.stderr
        assert "orders" in job.stdout and "compacted 1 table(s)" in job.stdout
        assert "orders: fold" in job.stderr  # plain progress lines when not on a terminal
        assert not any(workdir.iterdir()), "the job wrote local files"

        lake.refresh()
        history = lake.storage.table_store("orders", "history")
        assert history.exists()
        assert (
            history.app_version("rhei.folded")
            == lake.query("SELECT max(_rhei_seq) AS m FROM orders_changes").column(0)[0].as_py()
        )
        assert lake.query("SELECT * FROM orders_history ORDER BY _rhei_seq") == history_before
        assert lake.query("SELECT * FROM orders ORDER BY id") == current_before
        assert history.to_arrow().num_rows == history_before.num_rows  # all of it now lives in history
        assert lake.storage.table_store("orders", "changes").stats().files <= 2
        assert_same_state(lake, oltp_oracle(lake), "orders")

        # The app keeps working against the compacted lake.
        lake.execute("UPDATE orders SET customer = 'zed' WHERE id = 29")
        lake.sync_now()
        assert lake.query("SELECT customer FROM orders WHERE id = 29").to_pylist() == [{"customer": "zed"}]


def test_compaction_job_fails_with_one_clear_line(s3_lake, tmp_path):
    url, options = s3_lake
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RHEI_"))}
    env.update(options)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    missing_bucket = "s3://no-such-bucket-here/lake"
    for target, message in ((missing_bucket, "bucket does not exist"), (url, "no mirrored tables")):
        job = subprocess.run(
            [sys.executable, "-m", "rhei_lake.cli.app", "compact", "--storage", target],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert job.returncode == 1, job.stdout
        lines = [line for line in job.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], job.stderr
        assert "Traceback" not in job.stderr and options["AWS_SECRET_ACCESS_KEY"] not in job.stderr
