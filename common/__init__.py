"""What the trainer, the client and the local server share without importing one another.

`common.contract` is the model contract (signature names, tensor keys, dtypes, assets.extra
files) and imports nothing; `common.quiet` hides TensorFlow's start-up noise (standard library
only); `common.cli` is the one-line error style of the typer CLIs (typer, a base dependency).
Each module's docstring says what else it needs. Every extra installs this package; nothing
here imports trainer, serving or client, and importing the package itself loads nothing.
"""
