pytest_plugins = ["tests.servers.s3", "tests.servers.fake_gdrive"]
