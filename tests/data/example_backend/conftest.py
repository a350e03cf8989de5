pytest_plugins = ["fqdnpolicy.testing.plugin"]
