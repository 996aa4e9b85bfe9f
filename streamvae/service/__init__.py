"""The long-running process: daemon loop, signals, HTTP. Only the CLI imports it."""
