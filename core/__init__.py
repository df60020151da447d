"""The composition root: builds the process's adapters from Settings, for every entry point.

`api/`, the CLI (`local/cli.py`), `modal_app.py` and the agents' Modal functions all open
`Services` here, so each process is wired the same way and nothing above reaches into another
entry point for its parts.
"""
