"""Compaction: fold the change feed into SCD2 history (or current rows), and keep Delta tables lean.

``derived`` (the history/current tables), ``versions`` (events to versions, in
SQL), ``fold`` (the exactly-once fold), ``maintenance`` (expire, bin-pack,
checkpoint, vacuum), ``job`` (a run over a lake's tables) and ``report``.
"""
