"""Read Delta tables with Daft, as a user who knows nothing of rhei_lake would; run in Daft's own environment.

``python daft_reader.py OUT_DIR`` reads a JSON request on stdin::

    {"runner": "native" | "ray",
     "storage_options": {...AWS_* of an S3-compatible store, or empty...},
     "reads": [{"name": "...", "uri": "...", "as_of": null | "ISO instant" | "current"}]}

and writes each read as ``OUT_DIR/<name>.arrow`` (Arrow IPC). ``as_of``
filters a history table to the versions alive at that instant (``current``:
the open ones), in Daft. The last stdout line is a JSON summary. This file
imports neither rhei_lake nor the tests: Daft's environment has neither.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path


def io_config(options: dict):
    from daft.io import IOConfig, S3Config

    if not options:
        return None
    return IOConfig(
        s3=S3Config(
            endpoint_url=options.get("AWS_ENDPOINT_URL"),
            key_id=options.get("AWS_ACCESS_KEY_ID"),
            access_key=options.get("AWS_SECRET_ACCESS_KEY"),
            region_name=options.get("AWS_REGION", "us-east-1"),
            force_virtual_addressing=False,
            use_ssl=not str(options.get("AWS_ENDPOINT_URL", "")).startswith("http://"),
            num_tries=3,
        )
    )


def alive(df, as_of: str):
    from daft import col, lit

    if as_of == "current":
        return df.where(col("_rhei_valid_to").is_null())
    instant = datetime.fromisoformat(as_of)
    return df.where(
        (col("_rhei_valid_from") <= lit(instant))
        & (col("_rhei_valid_to").is_null() | (col("_rhei_valid_to") > lit(instant)))
    )


def main() -> int:
    import daft
    import pyarrow as pa
    import pyarrow.ipc as ipc

    out = Path(sys.argv[1])
    request = json.load(sys.stdin)
    summary = {"runner": request["runner"], "daft": daft.__version__, "rows": {}}
    if request["runner"] == "ray":
        import ray

        # A local Ray cluster owned by this process: ray.shutdown() ends it (no machine-wide `ray stop`).
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        daft.set_runner_ray()
        summary["ray_nodes"] = len(ray.nodes())
    else:
        daft.set_runner_native()
    try:
        config = io_config(request.get("storage_options") or {})
        for read in request["reads"]:
            df = daft.read_deltalake(read["uri"], io_config=config)
            if read.get("as_of"):
                df = alive(df, read["as_of"])
            table = df.to_arrow()
            table = pa.Table.from_batches(table.to_batches(), schema=table.schema)
            with ipc.new_file(str(out / f"{read['name']}.arrow"), table.schema) as writer:
                writer.write_table(table)
            summary["rows"][read["name"]] = table.num_rows
    finally:
        if request["runner"] == "ray":
            import ray

            ray.shutdown()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    status = main()
    # Daft's native runner threads can abort the interpreter's finalization (SIGABRT,
    # "PyGILState_Release: thread state ... must be current", seen once in CI) after every
    # answer is written: flush and leave without finalizing, so a read that succeeded says so.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
