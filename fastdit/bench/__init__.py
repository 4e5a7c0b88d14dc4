"""Benchmark suites (each a module with ``add_arguments`` and ``run``) and their shared report writer."""
