"""SQLite authorizers: moved to :mod:`rhei_lake._shared.sqlite_guard`, which the OLTP read route shares.

The names stay importable from here.
"""

from rhei_lake._shared.sqlite_guard import BATCH_SAVEPOINT as BATCH_SAVEPOINT
from rhei_lake._shared.sqlite_guard import Authorizer as Authorizer
from rhei_lake._shared.sqlite_guard import Refusal as Refusal
from rhei_lake._shared.sqlite_guard import may_change_schema as may_change_schema
from rhei_lake._shared.sqlite_guard import read_only as read_only
from rhei_lake._shared.sqlite_guard import write_guard as write_guard
