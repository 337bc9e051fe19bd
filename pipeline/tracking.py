"""A small MLflow logger on MlflowClient: one parent run per study, one child run per trial.

Runs are linked through the `mlflow.parentRunId` tag explicitly, never through MLflow's
thread-local active run, so several studies or workers can log side by side. Each trial costs
three calls: create the run when the trial starts (so a killed worker leaves a visible RUNNING run
that the next run marks KILLED), one log_batch with everything, and set_terminated.
"""
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from pipeline.config import mask_url
from pipeline.errors import PipelineError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT = "mlflow.parentRunId"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str):
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as e:  # any backend error: unreachable server, bad URI, locked file
            raise PipelineError(
                f"MLflow tracking at {mask_url(tracking_uri)} is not usable ({type(e).__name__}): "
                f"check MLFLOW_TRACKING_URI"
            ) from None

    def study_run(self, study_name: str, tags: dict) -> str:
        """The study's parent run: reused when the study resumes, created otherwise."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.study_name = '{study_name}' and tags.run_type = 'study'", max_results=1
        )
        if runs:
            run_id = runs[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, tags={**tags, "study_name": study_name, "run_type": "study"},
                                     run_name=study_name)
        return run.info.run_id

    def start_trial(self, parent_id: str, number: int, tags: dict) -> str:
        run = self.client.create_run(
            self.experiment_id, start_time=_now_ms(), run_name=f"trial-{number:04d}",
            tags={**tags, PARENT: parent_id, "run_type": "trial", "trial_number": str(number)},
        )
        return run.info.run_id

    def finish_trial(self, run_id: str, params: dict, metrics: dict, curves: dict, tags: dict, status: str) -> None:
        """One log_batch: params, scalar metrics, and curves as {name: (steps, values)}."""
        ts = _now_ms()
        batch = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
        for name, (steps, values) in curves.items():
            batch += [Metric(name, float(v), ts, int(s)) for s, v in zip(steps, values)]
        self.client.log_batch(
            run_id, metrics=batch, params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.set_terminated(run_id, status=status, end_time=ts)

    def running_trials(self, parent_id: str) -> dict:
        """trial number -> run id, for child runs still marked RUNNING."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        return {int(r.data.tags["trial_number"]): r.info.run_id for r in runs}

    def child_runs(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}'", max_results=50000)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status, end_time=_now_ms())

    def finish_study(self, run_id: str, metrics: dict, tags: dict, artifact_dir=None) -> None:
        """Best values as metrics and tags, not params: a study extended with more trials may
        find a new best, and MLflow params cannot change once logged."""
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        if artifact_dir is not None:
            self.client.log_artifacts(run_id, str(artifact_dir))
        self.client.set_terminated(run_id, status="FINISHED")

    def log_report(self, name: str, params: dict, metrics: dict, tags: dict, artifacts: list) -> str:
        """The evaluation and report as one run, with the report and its figures as artifacts."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "run_type": "report"})
        run_id = run.info.run_id
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        for path, folder in artifacts:
            self.client.log_artifact(run_id, str(path), folder)
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id
