"""Optimizer benchmark: tune and compare the optimizers of D2L chapter 11 on the airfoil data."""
import os

# Set before TensorFlow is imported anywhere. oneDNN's custom kernels may reorder float sums between
# runs; our training runs through XLA anyway, so turning them off costs nothing and removes a source
# of run-to-run differences (and its start-up notice). Level 2 hides TensorFlow's start-up chatter.
# setdefault: a user who wants either back can still set it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# MLflow 3 sends usage telemetry from every process that uses it: network calls at run time, which
# fail offline and cost each study a few ms per trial. Off unless the user turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Arrow's library (loaded late, by Keras through pandas, in a process already running TensorFlow)
# starts a jemalloc background thread on load, the place of pyarrow's known intermittent segfaults
# (apache/arrow#44342, ray-project/ray#60478). Arrow allocates through mimalloc here anyway, so the
# thread only returns memory of an allocator nothing uses.
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
