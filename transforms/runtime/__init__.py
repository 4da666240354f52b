"""The Beam-free runtime: loaders build runners, runners own a loaded model.

Nothing here imports Beam at module level, so a runner works in any Python program
(a notebook, a benchmark, a Triton model) and is tested without a pipeline. Reading
``gs://`` goes through Beam's FileSystems when it is installed (storage.py).
"""
