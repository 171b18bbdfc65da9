"""Live calls' benchmark (latency.py) and the client peer it and the tests use (client.py)."""
