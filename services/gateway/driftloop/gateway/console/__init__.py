"""The web console at /ui: server-rendered pages of the models, their cycles, drift and rollouts,
with the controls the CLI has (routes.console_router)."""
