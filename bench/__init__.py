"""lo_stream's benchmarks (``make bench``): see docs/benchmarks.md."""
