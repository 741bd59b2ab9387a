"""Every ``rh`` command, run as the installed console script in a subprocess."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from tests.support.rh import one_error_line, rh


@pytest.fixture
def shop(tmp_path):
    """A config for an HTAP lake whose `orders` table is mirrored, synced, then updated once more."""
    assert rh("init", "--db", "shop.db", "--storage", "./lake", cwd=tmp_path).returncode == 0
    config = str(tmp_path / "rhei.toml")
    steps = [
        ("exec", "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, note BLOB)"),
        ("exec", "INSERT INTO orders VALUES (1, 'ada', 10.5, x'00ff'), (2, 'bob', 20, NULL), (3, 'cy', 30, NULL)"),
        ("register", "orders"),
    ]
    for command, arg in steps:
        result = rh(command, "--config", config, arg, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    return tmp_path, config


def test_exec_register_sync_status_and_query(shop):
    cwd, config = shop
    assert (
        "ok, 1 row changed"
        in rh("exec", "--config", config, "UPDATE orders SET total = 12 WHERE id = 1", cwd=cwd).stdout
    )
    app = sqlite3.connect(cwd / "shop.db")  # the application writes on its own connection: captured, not synced
    with app:
        app.execute("UPDATE orders SET total = 11 WHERE id = 1")
    app.close()
    before = json.loads(rh("status", "--config", config, "--format", "json", cwd=cwd).stdout)
    assert before["tables"]["orders"]["lag_events"] == 1

    synced = rh("sync", "--config", config, cwd=cwd)
    assert synced.returncode == 0 and "synced 1 events" in synced.stdout, synced.stderr
    after = json.loads(rh("status", "--config", config, "--format", "json", cwd=cwd).stdout)
    assert after["tables"]["orders"]["lag_events"] == 0
    assert after["tables"]["orders"]["synced_seq"] == before["tables"]["orders"]["synced_seq"] + 1
    table = rh("status", "--config", config, cwd=cwd).stdout
    assert "orders" in table and "behind the source: 0 events" in table

    pretty = rh("query", "--config", config, "SELECT id, total FROM orders ORDER BY id", cwd=cwd)
    assert pretty.returncode == 0 and "11.0" in pretty.stdout and "(3 rows)" in pretty.stdout
    point = rh(
        "query",
        "--config",
        config,
        "--hint",
        "oltp",
        "--format",
        "json",
        "SELECT total FROM orders WHERE id = 1",
        cwd=cwd,
    )
    assert json.loads(point.stdout) == [{"total": 11.0}], point.stderr


def test_query_output_formats_and_as_of(shop):
    cwd, config = shop
    lake = str(cwd / "lake")
    csv = rh("query", "--storage", lake, "--format", "csv", "SELECT id, customer FROM orders ORDER BY id", cwd=cwd)
    assert csv.stdout.splitlines() == ['"id","customer"', '1,"ada"', '2,"bob"', '3,"cy"']
    rows = json.loads(rh("query", "--storage", lake, "-f", "json", "SELECT id, note FROM orders ORDER BY id").stdout)
    assert rows[0] == {"id": 1, "note": "00ff"}
    for fmt, read in (("parquet", pq.read_table), ("arrow", lambda p: ipc.open_file(p).read_all())):
        out = cwd / f"orders.{fmt}"
        result = rh("query", "--storage", lake, "--format", fmt, "--output", str(out), "SELECT * FROM orders")
        assert result.returncode == 0 and result.stdout == "", result.stderr
        assert read(str(out)).num_rows == 3

    changes = json.loads(
        rh("query", "--storage", lake, "-f", "json", "SELECT _rhei_ts AS ts FROM orders_changes").stdout
    )
    snapshot_time = changes[0]["ts"]
    rh("exec", "--config", config, "DELETE FROM orders WHERE id = 3", cwd=cwd)
    rh("sync", "--config", config, cwd=cwd)
    now = rh("query", "--storage", lake, "-f", "csv", "SELECT count(*) AS n FROM orders")
    then = rh("query", "--storage", lake, "-f", "csv", "--as-of", snapshot_time, "SELECT count(*) AS n FROM orders")
    assert now.stdout.splitlines()[1] == "2" and then.stdout.splitlines()[1] == "3", (now.stderr, then.stderr)


def test_restore_writes_a_new_database_and_refuses_to_overwrite(shop):
    cwd, config = shop
    out = cwd / "restored.db"
    result = rh("restore", "--config", config, str(out), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "restoring orders: 3/3 rows (100%)" in result.stderr  # not a terminal: plain progress lines
    assert sqlite3.connect(out).execute("SELECT id, customer FROM orders ORDER BY id").fetchall() == [
        (1, "ada"),
        (2, "bob"),
        (3, "cy"),
    ]
    line = one_error_line(rh("restore", "--config", config, str(out), cwd=cwd))
    assert "exists; pass --overwrite" in line
    again = rh("restore", "--storage", str(cwd / "lake"), "--table", "orders", "--overwrite", str(out))
    assert again.returncode == 0, again.stderr
    missing = one_error_line(rh("restore", "--storage", str(cwd / "lake"), "--table", "nope", str(cwd / "x.db")))
    assert "nope" in missing
    empty = one_error_line(rh("restore", "--storage", str(cwd / "no-lake-here"), str(cwd / "x.db")))
    assert "no mirrored tables" in empty


def test_info_shows_versions_storage_and_tables(shop):
    cwd, config = shop
    out = rh("info", "--config", config, cwd=cwd).stdout
    for word in ("rhei_lake", "deltalake", "datafusion", "lake", "shop.db", "table orders", "key (id)"):
        assert word in out, out


def test_register_shows_progress_lines_when_not_a_terminal(tmp_path):
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(5000)])
    conn.commit()
    conn.close()
    result = rh("register", "--db", str(db), "--storage", str(tmp_path / "lake"), "t")
    assert result.returncode == 0, result.stderr
    assert "registering t: 5000/5000 rows (100%)" in result.stderr
    assert "mirroring t: key (id), 2 columns" in result.stdout


def test_init_writes_a_config_rh_loads_and_never_overwrites(tmp_path):
    result = rh("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "rhei.toml").read_text()
    assert text.count("\n# ") > 40 and 'storage = "./lake"' in text and "[serve]" in text
    info = rh("info", "--config", "rhei.toml", cwd=tmp_path)
    assert info.returncode == 0 and "lake only" in info.stdout, info.stderr
    assert "exists; pass --force" in one_error_line(rh("init", cwd=tmp_path))

    sidecar = rh(
        "init",
        "sidecar.toml",
        "--source",
        f"sqlite:///{tmp_path}/app.db",
        "--table",
        "orders",
        "--table",
        "customers",
        "--updated-at",
        "modified",
        cwd=tmp_path,
    )
    assert sidecar.returncode == 0, sidecar.stderr
    written = (tmp_path / "sidecar.toml").read_text()
    assert [line for line in written.splitlines() if line.startswith("[[")] == ["[[tables]]", "[[tables]]"]
    assert 'updated_at = "modified"' in written
    assert "--table" in one_error_line(rh("init", "x.toml", "--source", "sqlite:///a.db", cwd=tmp_path))


def test_every_option_of_the_template_is_valid_when_uncommented(tmp_path):
    """Uncommenting any one example line of the template still gives a configuration rh accepts."""
    from rhei_lake.cli.init import config_template
    from rhei_lake.config import LakeConfig, build_config
    from rhei_lake.config_file import read_config_file
    from rhei_lake.service.config import ServiceConfig, build_service_config

    text = config_template({"storage": "./lake"}, tables=[])
    lines = text.splitlines()
    fields = set(LakeConfig.model_fields) | set(ServiceConfig.model_fields)
    options = [i for i, line in enumerate(lines) if line.startswith("# ") and line[2:].split(" = ")[0] in fields]
    names = {lines[i][2:].split(" = ")[0] for i in options}
    assert names == fields - {"storage", "tables"}
    path = tmp_path / "one.toml"
    for i in options:
        name = lines[i][2:].split(" = ")[0]
        if name in ("source", "compact_interval") or name.startswith("flight_tls"):
            continue  # need companions (tables; TLS key) or exclude another example
        edited = lines[:i] + [lines[i][2:]] + lines[i + 1 :]
        path.write_text("\n".join(edited))
        file = read_config_file(path)
        build_config(file.lake)
        build_service_config(file.serve)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["query", "--bogus", "SELECT 1"], "No such option: --bogus"),
        (["frobnicate"], "No such command"),
        (["restore"], "Missing argument"),
        (["serve", "--metrics-port", "many"], "--metrics-port"),
        (["query", "SELECT 1"], "nothing to open"),
        (["exec", "--storage", "./lake", "SELECT 1"], "needs a SQLite database"),
        (["query", "--storage", "./lake", "--format", "xml", "SELECT 1"], "--format must be one of"),
        (["query", "--storage", "./lake", "--output", "x.csv", "SELECT 1"], "--output needs --format"),
        (["status", "--storage", "./lake", "--format", "yaml"], "--format must be one of table, json"),
        (["query", "--storage", "./lake", "SELEC 1"], "SELEC"),
        (["query", "--storage", "ftp://x/y", "SELECT 1"], "storage"),
        (["repl", "--storage", "./lake", "--timing", "--history"], "--history"),
        (["init", "--table", "t"], "--source"),
        (["sync", "--storage", "./lake"], "sidecar"),
    ],
)
def test_bad_arguments_print_one_line_and_fail(tmp_path, args, expected):
    result = rh(*args, cwd=tmp_path)
    assert expected in one_error_line(result)
    assert result.returncode in (1, 2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('storage = "./lake"\nsync_intervall = 1\n', "unknown option sync_intervall (did you mean sync_interval?)"),
        ('storage = "./lake"\nbatch_size = "lots"\n', "batch_size:"),
        ('storage = "./lake"\nsync_mode = "sometimes"\n', "sync_mode:"),
        ('storage = "./lake\n', "not valid TOML"),
        ('storage = "./lake"\n[serve]\nmetrics_prot = 9100\n', "serve.metrics_prot (did you mean metrics_port?)"),
        ('storage = "./lake"\n[serve]\ncompact_schedule = "61 * * * *"\n', "serve.compact_schedule"),
        ('storage = "./lake"\n[serve]\ncompact_interval = 60\ncompact_schedule = "@hourly"\n', "exclude each other"),
        ('storage = "./lake"\nserve = 3\n', "[serve] must be a table"),
        ('source = "sqlite:///x.db"\n', "sidecar mode needs tables"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path, content, expected):
    (tmp_path / "bad.toml").write_text(content)
    command = ["serve", "--headless"] if "[serve]" in content else ["info"]
    result = rh(*command, "--config", "bad.toml", cwd=tmp_path)
    assert expected in one_error_line(result)
    assert result.returncode == 1


def test_a_missing_config_file_is_one_line(tmp_path):
    assert "does not exist" in one_error_line(rh("status", "--config", "nope.toml", cwd=tmp_path))


def test_the_cli_refuses_a_naive_as_of_before_opening_anything(tmp_path):
    for args in (
        ["query", "--storage", "./lake", "--as-of", "2026-05-01 12:00:00", "SELECT 1"],
        ["restore", "out.db", "--storage", "./lake", "--as-of", "2026-05-01T12:00:00"],
    ):
        result = rh(*args, cwd=tmp_path)
        assert result.returncode == 2  # a bad argument
        assert one_error_line(result).startswith("error: --as-of: '2026-05-01"), result.stderr
        assert "append Z for UTC" in result.stderr
        assert not (tmp_path / "lake").exists() and not (tmp_path / "out.db").exists()
