"""Test doubles for the tests and benchmarks (bgen_assets/bench/); no runtime module imports this package."""
