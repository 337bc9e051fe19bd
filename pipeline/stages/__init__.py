"""One module (or package) per stage of dvc.yaml."""
