"""A deep classifier on a data set scikit-learn ships inside the package (no download): the digits
problem's 1,797 8x8 images by default. A stratified, seeded split, features standardized with the
training part's statistics only, softmax cross-entropy as the training loss, held-out loss and
accuracy of the trained model.

The split and the scaling are scikit-learn's own (train_test_split, StandardScaler: a pixel constant
over the training part keeps scale 1); the network and its loop are network.py's, with one output per
class. Why this network is in the README, fixed before any result was looked at.
"""
import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.core.workloads import Network

TEST_FRACTION = 0.25  # digits: 450 of 1,797 images held out, every class in proportion
SPLIT_SEED = 0  # the split is part of the problem's definition, the same for every training seed


@functools.lru_cache(maxsize=None)
def split(source: str) -> dict:
    """sklearn.datasets.load_<source>() split and scaled: float32 features, labels as float32 class
    numbers, row indices, the scaler's constants and the number of classes."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    images = getattr(sklearn.datasets, f"load_{source}")()
    rows = np.arange(len(images.target))
    train_rows, test_rows = train_test_split(rows, test_size=TEST_FRACTION, stratify=images.target,
                                             random_state=SPLIT_SEED)
    scaler = StandardScaler().fit(images.data[train_rows])
    scaled = scaler.transform(images.data).astype(np.float32)
    labels = images.target.astype(np.float32)
    return {"train": (scaled[train_rows], labels[train_rows]), "test": (scaled[test_rows], labels[test_rows]),
            "train_rows": train_rows.tolist(), "test_rows": test_rows.tolist(),
            "means": scaler.mean_.tolist(), "scales": scaler.scale_.tolist(),
            "classes": int(len(np.unique(images.target))), "samples": len(rows)}


@dataclass(frozen=True)
class Classifier(Network):
    """A network with one output per class and softmax cross-entropy, on a bundled scikit-learn set."""

    source: str = "digits"  # sklearn.datasets.load_<source>: digits, wine, iris, breast_cancer

    kind: ClassVar[str] = "network"
    has_split: ClassVar[bool] = True
    held_out_names: ClassVar[tuple] = ("loss", "accuracy")  # what TrainResult.held_out holds at each record
    loss: ClassVar[str] = "softmax"

    def loop(self, optimizer: str, n_features: int):
        from pipeline.core import network

        return network.compiled(optimizer, self.sizes(n_features), self.activation, self.loss, held_out=True)

    def loop_data(self, dataset) -> tuple:
        from pipeline.core.tfimport import tf

        features, labels = split(self.source)["test"]
        return (tf.constant(dataset.features), tf.constant(dataset.target), tf.constant(features), tf.constant(labels))

    def data(self, prepared):
        from pipeline.core.data import Dataset

        features, labels = split(self.source)["train"]
        return Dataset(features, labels, {"rows": len(labels)})

    def sizes(self, n_features: int) -> tuple:
        return (n_features, *self.hidden, split(self.source)["classes"])

    def held_out_metrics(self, theta: np.ndarray) -> dict:
        """Cross-entropy and accuracy on the held-out part (digits: 450 images), float64."""
        from pipeline.core import network

        features, labels = split(self.source)["test"]
        sizes = self.sizes(features.shape[1])
        return {"loss": network.numpy_loss(features, labels, theta, sizes, self.activation, self.loss),
                "accuracy": network.numpy_accuracy(features, labels, theta, sizes, self.activation)}

    def data_record(self, dataset) -> dict:
        s = split(self.source)
        return {"source": f"sklearn.datasets.load_{self.source}(): {s['samples']} samples, "
                          f"{len(s['means'])} features, {s['classes']} classes",
                "split": f"sklearn.model_selection.train_test_split(test_size={TEST_FRACTION}, stratify=labels, "
                         f"random_state={SPLIT_SEED})",
                "train_rows": s["train_rows"], "held_out_rows": s["test_rows"],
                "preprocessing": {"scaler": "sklearn StandardScaler fitted on the training rows only",
                                  "means": s["means"], "scales": s["scales"]}}
