"""A fake third-party pytest-ragbench plugin (test data): entry points and a pytest plugin."""
