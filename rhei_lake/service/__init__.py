"""Service mode (``rh serve``): one open lake driven by a background sync loop, compaction on a
schedule, Prometheus metrics and, when configured, the Flight SQL server (:mod:`rhei_lake.flight`).

:class:`~rhei_lake.service.lake_service.LakeService` is the daemon; its settings are the ``[serve]``
table of a configuration file (:mod:`rhei_lake.service.config`).
"""
