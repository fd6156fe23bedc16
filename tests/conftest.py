"""Suite-wide pytest plugins."""

pytest_plugins = ["tests.fakeapi.fixtures"]
