"""The core the stages stand on: params, data, optimizers, the training engine, MLflow."""
