"""The HTTP API: `create_app(config)`, the `/v1` handlers, middlewares, OpenAPI and watch streams."""
