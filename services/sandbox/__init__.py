"""The sandbox: an emulated cluster (Kubernetes API, vLLM replicas, load, router) on one machine.

Pure models (`queueing`, `load`) are apart from the I/O shell (`vllm`, `runtime`, `router`, `filesd`,
`cluster`); `scenario` reads the YAML that ties them together; `command` is the CLI entry.
"""
