"""A client process that starts a large query, reads one batch, then stops reading (until killed).

python -m tests.flight.stalled_client LOCATION [SQL]
"""

from __future__ import annotations

import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql

BIG = "SELECT value, uuid() || uuid() || uuid() AS pad FROM range(300000)"


def main() -> None:
    conn = flight_sql.connect(sys.argv[1], autocommit=True)
    cursor = conn.cursor()
    cursor.execute(sys.argv[2] if len(sys.argv) > 2 else BIG)
    cursor.fetch_record_batch().read_next_batch()
    print("stalled", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
