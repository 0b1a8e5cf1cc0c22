"""Pure statement builders, by what they touch: ``search`` (reads), ``hybrid`` (keyword and fused
search), ``writes`` (COPY targets, merge, deletes, locks), ``catalog`` (versions, indexes,
session settings) and ``filters`` (the filter language). None of them touches a connection:
each returns a SQLAlchemy statement (or psycopg ``sql`` for COPY), testable by compiling it."""
