"""The agentrun services over HTTP (Connect and gRPC-Web) and the web console.

`server.HttpServer` runs the port; `bridge` serves the gRPC handlers over Connect; `static`
serves the console. Nothing here is imported unless the HTTP port is on.
"""
