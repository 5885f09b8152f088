"""The fan-out benchmark's orchestrator (see bench/README.md); `bench/run.py` is the entry point."""
