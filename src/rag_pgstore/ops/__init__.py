"""The operations, as plans: ``reads`` (get, count, search, MMR, hybrid), ``writes`` (upsert,
delete), ``lifecycle`` (setup, drop, indexes, describe) and ``cache`` (the embedding cache).

Each function checks its arguments when called and returns a generator of steps
(``driver/steps.py``), or a function that builds one when the operation may be run again. A
plan never touches a connection: ``ChunkStore`` hands it to a driver. This is also the
public tier for code that needs an operation the facade does not spell out:
``store.run_plan(ops.reads.search(store.collection, ...))``.
"""
