pytest_plugins = ["tests.servers.postgres", "tests.servers.mariadb"]
