"""The wva services (watcher, fetcher, scaler), the sandbox and the observation tools."""
