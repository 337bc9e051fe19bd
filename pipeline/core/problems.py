"""The problem registry: the one place that lists the problems, as optimizers.py is for optimizers.
Each is a workload (workloads.py) that owns its data, model, loss, metrics and floor; every stage
follows it. Its training protocol is a knob: params.yaml's `train` with the problem's changes in
`protocols.<name>` (config.protocol). To add a problem, add one workload here.
"""
from pipeline.core.deep_quadratic import DeepQuadratic
from pipeline.core.classifier import Classifier
from pipeline.core.errors import PipelineError
from pipeline.core.workloads import LinearRegression, Network, Workload

PROBLEMS = {p.name: p for p in (
    LinearRegression("linreg", "linear regression (convex)",
                     "the book's linear regression y = Xw + b, w ~ N(0, train.init_std), b = 0: convex least squares",
                     floor="least_squares", dense_analyses=True, convex=True),
    # Two tanh layers of 64 (4,609 parameters). tanh rather than ReLU: a smooth loss, so the float64
    # check holds on every step (no kink a rounding error can flip) and no unit dies. Its protocol
    # (params.yaml, protocols.mlp) trains 10 epochs.
    # DeepOBS's instance, so results here line up with DeepOBS's and Crowded Valley's published runs.
    DeepQuadratic("quadratic_deep", "DeepOBS quadratic_deep (convex, 100-D)",
                  "DeepOBS's noisy quadratic 0.5 (theta - x)^T H (theta - x), 100 dimensions, 90 eigenvalues in (0, 1) "
                  "and 10 in (30, 60), theta from ones", floor="closed_form", dense_analyses=False, convex=True),
    Network("mlp", "tanh network 5-64-64-1 (non-convex)",
            "a fully connected network 5 -> 64 -> 64 -> 1 with tanh, Glorot-uniform weights, zero biases",
            floor="best_known", dense_analyses=False, convex=False, hidden=(64, 64), activation="tanh"),
    # Two tanh layers of 64 on the 64 pixels, one output per digit (8,970 parameters), Glorot-uniform
    # weights: deep and non-convex, smooth like mlp (the float64 check holds on every step). README: why.
    Classifier("digits", "tanh classifier 64-64-64-10 on digits (non-convex)",
               "a fully connected classifier 64 -> 64 -> 64 -> 10 with tanh and softmax cross-entropy on "
               "scikit-learn's 8x8 digits, Glorot-uniform weights, zero biases", floor="best_known",
               dense_analyses=False, convex=False, hidden=(64, 64), activation="tanh"),
)}


def get(name: str) -> Workload:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise PipelineError(f"unknown problem {name!r}: choose one of {', '.join(sorted(PROBLEMS))}") from None
