"""TensorFlow, imported without loading all of Keras up front.

`import tensorflow` ends with `importlib.import_module("keras.src.optimizers")`, which imports the
whole of Keras (about half of TensorFlow's start-up on the 2-core development machine) only to
register Keras's optimizers for SavedModel loading, which this project never does. TensorFlow
wraps that import in `except ImportError: pass`, so we let exactly that call fail while TensorFlow
imports. `tf.keras` is unaffected: it still loads Keras on first use (the Keras comparison does).
Every module of the pipeline imports TensorFlow from here.
"""
import importlib
import sys

_DEFERRED = ("keras.src.optimizers", "tf_keras.src.optimizers")


def _import_tensorflow():
    if "tensorflow" in sys.modules:  # imported elsewhere first: nothing left to save
        return sys.modules["tensorflow"]
    real_import_module = importlib.import_module

    def import_module(name, package=None):
        if name in _DEFERRED:
            raise ImportError(f"{name}: deferred until tf.keras is used")
        return real_import_module(name, package)

    importlib.import_module = import_module
    try:
        import tensorflow
    finally:
        importlib.import_module = real_import_module
    return tensorflow


tf = _import_tensorflow()
