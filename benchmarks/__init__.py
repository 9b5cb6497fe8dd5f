"""socketkit's benchmarks: its server engine against reference echo servers.

Run ``python -m benchmarks`` from the repository root; see benchmarks/README.md.
"""
