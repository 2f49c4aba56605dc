"""bearerguard's benchmark suite: ``python -m benchmarks`` (see ``--help``).

Every figure is a median over interleaved rounds, shown with its min..max, and
every comparison is a ratio to a baseline measured in the same run, because
absolute numbers on a shared two-core machine mean little on their own.
"""
