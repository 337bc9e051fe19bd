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

from pipeline.core import config, fileio, optimizers, paths
from pipeline.stages.report import across_figures as AF
from pipeline.stages.report import comparison_figures as CF
from pipeline.stages.report import document
from pipeline.stages.report import figures as F
from pipeline.stages.report import findings
from pipeline.stages.report import schedule_figures as SF
from pipeline.core.config import Params
from pipeline.core.errors import PipelineError

plt = F.plt
PACKAGES = ("tensorflow-cpu", "keras", "optuna", "mlflow", "dvc", "numpy", "pandas", "matplotlib")
# Each problem's sections, in order, with their figures; a problem without the dense analyses has no
# landscape, sampler race, 2-D demo or Keras runs, and those figures are left out for it.
PROBLEM_SECTIONS = ("Results", "Convergence", "Effective learning rate", "The search", "Comparisons",
                    "From scratch vs Keras")
FIGURES = {
    "Convergence": [("convergence", F.fig_convergence), ("excess_loss", F.fig_excess)],
    "Effective learning rate": [("effective_lr", F.fig_effective_lr), ("decay_weights", F.fig_decay_weights),
                                ("quadratic", F.fig_quadratic)],
    "The search": [("optimization_history", F.fig_history), ("landscape", F.fig_landscape),
                   ("sensitivity", F.fig_sensitivity)],
    "Comparisons": [("tunability", CF.fig_tunability), ("samplers", CF.fig_samplers)],
    "From scratch vs Keras": [("scratch_vs_keras", F.fig_framework)],
}
DENSE_ONLY = {"quadratic", "landscape", "sensitivity", "tunability", "samplers", "scratch_vs_keras"}
NETWORK_FIGURES = {"effective_lr": AF.fig_layer_lr}  # a network's per-layer bands instead of per-coordinate lines
ACROSS = "Across problems"


class Inputs:
    """One problem's evaluation and studies, loaded once (`summary` is its part of summary.json)."""

    def __init__(self, params: Params, summary: dict, eval_dir: Path, studies_dir: Path, stats: dict):
        self.params, self.stats, self.summary = params, stats, summary
        self.problem, self.label, self.dense = summary["problem"], summary["label"], summary["dense_analyses"]
        try:
            self.curves = pd.read_csv(eval_dir / "curves.csv")
            self.coords = pd.read_csv(eval_dir / "coordinates.csv")
            if self.dense:
                self.landscape = pd.read_csv(eval_dir / "landscape.csv")
                self.budget = pd.read_csv(eval_dir / "budget.csv")
                self.quad = pd.read_csv(eval_dir / "quadratic.csv")
                self.samplers = pd.read_csv(eval_dir / "samplers.csv")
            self.schedules = pd.read_csv(eval_dir / "schedules.csv")
            self.trials = {o: pd.read_csv(paths.study_dir(self.problem, o, "constant", studies_dir) / "trials.csv")
                           for o in params.study.optimizers}
        except FileNotFoundError as e:
            raise PipelineError(f"{e.filename} not found: run `dvc repro evaluate` first") from None
        self.optimizers = list(params.study.optimizers)
        missing = [o for o in self.optimizers if o not in self.summary["optimizers"]]
        if missing:
            raise PipelineError(f"the evaluation has no {', '.join(missing)}: run `dvc repro evaluate` first")
        self.floor = self.summary["floor"]
        self.floor_name = "least-squares floor" if summary["floor_kind"] == "least_squares" else "best known loss"
        self.opt = self.summary["optimizers"]


class Report:
    """Everything the report reads: summary.json and each problem's Inputs."""

    def __init__(self, params: Params, eval_dir: Path, summary_path: Path, studies_dir: Path, stats: dict):
        try:
            self.summary = json.loads(Path(summary_path).read_text())
        except FileNotFoundError as e:
            raise PipelineError(f"{e.filename} not found: run `dvc repro evaluate` first") from None
        absent = [p for p in params.study.problems if p not in self.summary.get("problems", {})]
        if absent:
            raise PipelineError(f"the evaluation has no {', '.join(absent)}: run `dvc repro evaluate` first")
        self.params, self.stats, self.optimizers = params, stats, list(params.study.optimizers)
        self.problems = {p: Inputs(config.for_problem(params, p), self.summary["problems"][p], Path(eval_dir) / p,
                                   studies_dir, stats) for p in params.study.problems}
        try:
            self.book_schedules = pd.read_csv(Path(eval_dir) / "book_schedules.csv")
        except FileNotFoundError as e:
            raise PipelineError(f"{e.filename} not found: run `dvc repro evaluate` first") from None


def section_titles(r: Report) -> list:
    """Every section's title, in order, as both renderers show them."""
    names = [f"{d.label}: {name}" for d in r.problems.values() for name in PROBLEM_SECTIONS
             if d.dense or name != "From scratch vs Keras"] + [ACROSS, SF.TITLE]
    return ["Key findings", "1. Setup"] + [f"{i}. {name}" for i, name in enumerate(names, start=2)]


def figure_names(r: Report) -> list:
    return [f"{p}_{name}" for p, d in r.problems.items() for figs in FIGURES.values() for name, _ in figs
            if d.dense or name not in DENSE_ONLY] + [name for name, _ in AF.ACROSS_FIGURES] + [
        name for name, _ in SF.figures(r)]


def tables(d: Inputs) -> dict:
    """section -> [(title, header, rows)] for one problem."""
    made = {"Results": [(f"Target: {d.summary['target']['rule']}", *findings.results_table(d))],
            "Comparisons": [("Paired comparisons on the evaluation seeds (negative: the first is better)",
                             *findings.comparison_table(d))]}
    if d.dense:
        made["Comparisons"].append(("Samplers against the best known value: median regret at the full budget / "
                                    "trials until their median matches random search's expectation at the full budget",
                                    *findings.sampler_table(d)))
    return made


def title(r: Report) -> str:
    return (f"Optimizers on the airfoil data: {', '.join(F.label(o) for o in r.optimizers)} on "
            f"{', '.join(d.label for d in r.problems.values())}")


# --- text -----------------------------------------------------------------------------------

def setup_lines(r: Report, commit: str) -> list:
    p = r.params
    used = dict.fromkeys(h for o in r.optimizers for h in optimizers.get(o).hyperparams)
    space = "; ".join(f"{h} [{x.low:g}, {x.high:g}] ({x.scale})" for h, x in p.study.search_space.items() if h in used)
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    lines = [f"Data: NASA airfoil self-noise, {p.data.url}, SHA-1 {p.data.sha1}; first {r.stats['rows']} of "
             f"{r.stats['rows_in_file']} rows, every column standardized."]
    for d in r.problems.values():
        t, s = d.params.train, d.summary
        lines.append(f"Problem {d.label}: {s['description']}, trained from scratch in TensorFlow; batch {t.batch_size}, "
                     f"{t.epochs} epochs ({s['protocol']['steps']} steps), reshuffled every epoch, loss over all rows "
                     f"every {t.record_every} examples; floor {d.floor:.6f}, {s['floor_source']}.")
    return lines + [
        f"Search: Optuna TPE (seed {p.study.seed}), {p.study.n_trials} trials per problem and optimizer, "
        f"{p.study.seeds_per_trial} seeds per trial, objective {p.study.objective}; ranges {space}. The protocols and "
        f"the problems were fixed before any result was looked at; nothing is tuned towards an answer.",
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
    inputs = Report(params, paths.EVAL_DIR, paths.SUMMARY, paths.STUDIES_DIR, data.load_prepared().stats)
    with tracking.Tracker(tracking_uri, params.mlflow.experiment) as tracker:  # starts while we render
        captions = render(inputs, paths.REPORTS, commit)
        metrics = {f"{p}_{o}_{family}_final_loss": s[f"{family}_final_loss"]["mean"]
                   for p, d in inputs.problems.items() for o, s in d.opt.items() for family in ("tuned", "book")}
        metrics.update({f"{p}_{o}_regret": s["regret"] for p, d in inputs.problems.items() for o, s in d.opt.items()})
        metrics = {k: v for k, v in metrics.items() if v is not None}  # all seeds diverged: no number to log
        files = [(paths.REPORTS / "report.html", None), (paths.REPORTS / "report.pdf", None), (paths.SUMMARY, None)]
        files += [(paths.REPORTS / "figures" / f"{name}.png", "figures") for name in captions]
        studies = {paths.study_label(p, o, s): tracker.find_study_run(
            json.loads((paths.study_dir(p, o, s) / "best.json").read_text())["study_name"])
            for p in params.study.problems for o in params.study.optimizers for s in params.study.schedules}
        summary_id = tracker.experiment_ids(paths.study_label(params.study.problems[0], params.study.optimizers[0]))[0]
        note = "Built from the study runs: " + ", ".join(
            f"[{o}](#/experiments/{summary_id}/runs/{run_id})" for o, run_id in studies.items() if run_id)
        tracker.log_report(f"report · {', '.join(params.study.problems)} · {', '.join(params.study.optimizers)}",
                           {f"evaluate.{k}": v for k, v in dataclasses.asdict(params.evaluate).items()},
                           metrics, {"git_commit": commit, "mlflow.source.git.commit": commit,
                                     "data_sha1": params.data.sha1, "mlflow.note.content": note,
                                     "study_runs": ",".join(f"{o}={r}" for o, r in studies.items() if r)}, files)
    return captions


# --- rendering ------------------------------------------------------------------------------

def sections(r: Report, commit: str) -> list:
    """The whole report once, as the model both renderers draw from."""
    titles = iter(section_titles(r)[2:])
    made = [document.Section("Key findings", bullets=findings.report_findings(r), list_id="key-findings"),
            document.Section("1. Setup", bullets=setup_lines(r, commit))]
    for p, d in r.problems.items():
        problem_tables = tables(d)
        for name in PROBLEM_SECTIONS:
            if name == "From scratch vs Keras" and not d.dense:
                continue
            figures = [document.Figure(f"{p}_{fig}", _drawing(d, fig, make))
                       for fig, make in FIGURES.get(name, []) if d.dense or fig not in DENSE_ONLY]
            made.append(document.Section(next(titles), tables=[document.Table(*t) for t in problem_tables.get(name, [])],
                                         figures=figures))
    made.append(document.Section(next(titles), bullets=AF.across_lines(r),
                                 tables=[document.Table(*t) for t in AF.across_tables(r)],
                                 figures=[document.Figure(name, lambda make=make: make(r)) for name, make in AF.ACROSS_FIGURES]))
    made.append(document.Section(next(titles), tables=[document.Table(*SF.schedule_table(r))],
                                 figures=[document.Figure(name, make) for name, make in SF.figures(r)]))
    return made + [document.Section("How to reproduce", code=REPRODUCE)]


def _drawing(d: Inputs, name: str, make):
    """() -> (figure, caption) for one problem's figure; a network draws its own version where it has one."""
    make = NETWORK_FIGURES.get(name, make) if d.summary["network"] else make
    return lambda: make(d)


def render(d: Report, out_dir: Path, commit: str) -> dict:
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
