"""`report` stage: reports/report.html (self-contained, figures embedded) and reports/report.pdf
from the same sections, figures (figures.py) and captions, plus each figure as a PNG under
reports/figures/.

Every number in a caption is read from this run's evaluation and studies.
"""
import io
import json
import multiprocessing
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from pipeline.core import fileio, optimizers
from pipeline.stages.report import comparison_figures as CF
from pipeline.stages.report import document
from pipeline.stages.report import figures as F
from pipeline.stages.report import findings
from pipeline.core.config import Params
from pipeline.core.errors import PipelineError

plt = F.plt
PACKAGES = ("tensorflow-cpu", "keras", "optuna", "mlflow", "dvc", "numpy", "pandas", "matplotlib")
SECTIONS = ("Key findings", "1. Setup", "2. Results", "3. Convergence", "4. Effective learning rate", "5. The search",
            "6. Comparisons", "7. From scratch vs Keras, and how to reproduce")


class Inputs:
    """Everything the report reads, loaded once."""

    def __init__(self, params: Params, eval_dir: Path, summary_path: Path, studies_dir: Path, stats: dict):
        self.params, self.stats = params, stats
        try:
            self.summary = json.loads(Path(summary_path).read_text())
            self.curves = pd.read_csv(eval_dir / "curves.csv")
            self.coords = pd.read_csv(eval_dir / "coordinates.csv")
            self.landscape = pd.read_csv(eval_dir / "landscape.csv")
            self.budget = pd.read_csv(eval_dir / "budget.csv")
            self.quad = pd.read_csv(eval_dir / "quadratic.csv")
            self.samplers = pd.read_csv(eval_dir / "samplers.csv")
            self.trials = {o: pd.read_csv(Path(studies_dir) / o / "trials.csv") for o in params.study.optimizers}
        except FileNotFoundError as e:
            raise PipelineError(f"{e.filename} not found: run `dvc repro evaluate` first") from None
        self.optimizers = list(params.study.optimizers)
        missing = [o for o in self.optimizers if o not in self.summary["optimizers"]]
        if missing:
            raise PipelineError(f"the evaluation has no {', '.join(missing)}: run `dvc repro evaluate` first")
        self.floor = self.summary["floor"]
        self.opt = self.summary["optimizers"]


FIGURES = {  # section -> figures, in order
    SECTIONS[3]: [("convergence", F.fig_convergence), ("excess_loss", F.fig_excess)],
    SECTIONS[4]: [("effective_lr", F.fig_effective_lr), ("decay_weights", F.fig_decay_weights),
                  ("quadratic", F.fig_quadratic)],
    SECTIONS[5]: [("optimization_history", F.fig_history), ("landscape", F.fig_landscape),
                  ("sensitivity", F.fig_sensitivity)],
    SECTIONS[6]: [("tunability", CF.fig_tunability), ("samplers", CF.fig_samplers)],
    SECTIONS[7]: [("scratch_vs_keras", F.fig_framework)],
}


def tables(d: Inputs) -> dict:
    """section -> [(title, header, rows)]."""
    return {SECTIONS[2]: [("", *findings.results_table(d))],
            SECTIONS[6]: [("Paired comparisons on the evaluation seeds (negative: the first is better)",
                           *findings.comparison_table(d)),
                          ("Samplers against the best known value: median regret at the full budget / trials until "
                           "their median matches random search's expectation at the full budget",
                           *findings.sampler_table(d))]}


def title(d: Inputs) -> str:
    return f"Optimizers on the airfoil data: {', '.join(F.label(o) for o in d.optimizers)}"


# --- text -----------------------------------------------------------------------------------

def setup_lines(d: Inputs, commit: str) -> list:
    p = d.params
    used = dict.fromkeys(h for o in d.optimizers for h in optimizers.get(o).hyperparams)
    space = "; ".join(f"{h} [{r.low:g}, {r.high:g}] ({r.scale})" for h, r in p.study.search_space.items() if h in used)
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return [
        f"Data: NASA airfoil self-noise, {p.data.url}, SHA-1 {p.data.sha1}; first {d.stats['rows']} of "
        f"{d.stats['rows_in_file']} rows, every column standardized; least-squares floor {d.floor:.6f}.",
        f"Model: linear regression y = Xw + b, w ~ N(0, {p.train.init_std:g}), b = 0, trained from scratch in TensorFlow.",
        f"Protocol: batch {p.train.batch_size}, {p.train.epochs} epochs, reshuffled every epoch, loss over all rows "
        f"every {p.train.record_every} examples.",
        f"Search: Optuna TPE (seed {p.study.seed}), {p.study.n_trials} trials per optimizer, {p.study.seeds_per_trial} "
        f"seeds per trial, objective {p.study.objective}; ranges {space}.",
        f"Evaluation: {p.evaluate.seeds} fresh seeds from {p.evaluate.first_seed}; 'reached the floor' = within "
        f"{p.evaluate.floor_tolerance:.0%} of it.",
        f"Software: Python {platform.python_version()}, {versions}. Git commit {commit}.",
    ]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "n/a"


REPRODUCE = ["make repro            # set up .venv and run dvc repro (download ... report)",
             "dvc params diff; dvc metrics show; dvc plots show",
             "python -m pipeline ui         # MLflow, opened on the studies' runs",
             "optuna-dashboard studies/optuna.journal"]


# --- the stage ------------------------------------------------------------------------------

def run(params: Params, tracking_uri: str, commit: str) -> dict:
    """Render the report from the evaluation, and log it to MLflow as one run."""
    import dataclasses

    from pipeline.core import data, paths, tracking

    # Inputs first: bad input opens (and creates) no MLflow store.
    inputs = Inputs(params, paths.EVAL_DIR, paths.SUMMARY, paths.STUDIES_DIR, data.load_prepared().stats)
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:  # starts while we render
        captions = render(inputs, paths.REPORTS, commit)
        metrics = {f"{o}_{family}_final_loss": s[f"{family}_final_loss"]["mean"]
                   for o, s in inputs.opt.items() for family in ("tuned", "book")}
        metrics.update({f"{o}_regret": s["regret"] for o, s in inputs.opt.items()})
        metrics = {k: v for k, v in metrics.items() if v is not None}  # all seeds diverged: no number to log
        files = [(paths.REPORTS / "report.html", None), (paths.REPORTS / "report.pdf", None), (paths.SUMMARY, None)]
        files += [(paths.REPORTS / "figures" / f"{name}.png", "figures") for name in captions]
        studies = {o: tracker.find_study_run(json.loads((paths.STUDIES_DIR / o / "best.json").read_text())["study_name"])
                   for o in params.study.optimizers}
        summary_id = tracker.experiment_ids(params.study.optimizers[0])[0]
        note = "Built from the study runs: " + ", ".join(
            f"[{o}](#/experiments/{summary_id}/runs/{run_id})" for o, run_id in studies.items() if run_id)
        tracker.log_report(f"report · {', '.join(params.study.optimizers)}",
                           {f"evaluate.{k}": v for k, v in dataclasses.asdict(params.evaluate).items()},
                           metrics, {"git_commit": commit, "mlflow.source.git.commit": commit,
                                     "data_sha1": params.data.sha1, "mlflow.note.content": note,
                                     "study_runs": ",".join(f"{o}={r}" for o, r in studies.items() if r)}, files)
    return captions


# --- rendering ------------------------------------------------------------------------------

def sections(d: Inputs, commit: str) -> list:
    """The whole report once, as the model both renderers draw from."""
    section_tables = tables(d)
    made = [document.Section(SECTIONS[0], bullets=findings.key_findings(d.summary, d.optimizers, d.params.study.n_trials),
                             list_id="key-findings"),
            document.Section(SECTIONS[1], bullets=setup_lines(d, commit))]
    for title_ in SECTIONS[2:]:
        made.append(document.Section(
            title_, tables=[document.Table(*t) for t in section_tables.get(title_, [])],
            figures=[document.Figure(name, lambda make=make: make(d)) for name, make in FIGURES.get(title_, [])]))
    return made + [document.Section("How to reproduce", code=REPRODUCE)]


def render(d: Inputs, out_dir: Path, commit: str) -> dict:
    """Write report.html, report.pdf and figures/*.png from one model; return the figures' captions.

    The PDF is drawn in a forked process while this one draws the PNGs: each figure is drawn
    once per format anyway, and the two halves take about as long as each other."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    model = sections(d, commit)
    with fileio.atomic_path(out_dir / "report.pdf") as tmp_pdf:
        pdf_writer = multiprocessing.get_context("fork").Process(target=document.pdf, args=(tmp_pdf, title(d), model),
                                                                 name="report-pdf")
        pdf_writer.start()
        try:
            rendered = {}  # section -> [(name, png bytes, caption)]
            for section in model:
                for figure in section.figures:
                    made = figure.make()
                    if made is None:
                        continue
                    buf = io.BytesIO()
                    made[0].savefig(buf, format="png", bbox_inches="tight")
                    plt.close(made[0])
                    fileio.write_bytes(fig_dir / f"{figure.name}.png", buf.getvalue())
                    rendered.setdefault(section.title, []).append((figure.name, buf.getvalue(), made[1]))
        except BaseException:
            pdf_writer.terminate()  # no PDF without the rest of the report
            raise
        finally:
            pdf_writer.join()
        if pdf_writer.exitcode != 0:
            raise PipelineError(f"drawing report.pdf failed (exit {pdf_writer.exitcode}, traceback above): "
                                f"fix the figure it names and rerun `dvc repro report`")
    fileio.write_bytes(out_dir / "report.html", document.html(title(d), model, rendered).encode())
    return {name: caption for figs in rendered.values() for name, _, caption in figs}
