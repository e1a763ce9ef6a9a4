"""Train image classifiers and publish them as versioned SavedModels for TF Serving.

`python -m trainer --help` lists the commands; docs/trainer.md is the reference.
"""
