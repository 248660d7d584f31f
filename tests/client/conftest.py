from tests.server.conftest import auth_server, client, engine, server  # noqa: F401
