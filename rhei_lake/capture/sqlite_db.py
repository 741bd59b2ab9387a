"""Opening SQLite connections: moved to :mod:`rhei_lake._shared.sqlite_db`, which the OLTP read route shares.

The names stay importable from here.
"""

from rhei_lake._shared.sqlite_db import BUSY_TIMEOUT_MS as BUSY_TIMEOUT_MS
from rhei_lake._shared.sqlite_db import connect as connect
from rhei_lake._shared.sqlite_db import enable_wal as enable_wal
from rhei_lake._shared.sqlite_db import translate_sqlite_error as translate_sqlite_error
