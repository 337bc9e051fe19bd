"""`report` stage: reports/report.html (self-contained, figures embedded) and reports/report.pdf
from the same sections, figures (figures.py) and captions, plus each figure as a PNG under
reports/figures/.

Every number in a caption is read from this run's evaluation and studies.
"""
import base64
import html
import io
import json
import multiprocessing
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages

from pipeline.core import fileio, optimizers
from pipeline.stages.report import comparison_figures as CF
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
                          ("Samplers against the grid optimum: median regret at the full budget / trials until "
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

def render(d: Inputs, out_dir: Path, commit: str) -> dict:
    """Write report.html, report.pdf and figures/*.png; return the figure files and captions.

    The PDF is drawn in a forked process while this one draws the PNGs: each figure is drawn
    once per format anyway, and the two halves take about as long as each other."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    text = {"findings": findings.key_findings(d.summary, d.optimizers, d.params.study.n_trials), "setup": setup_lines(d, commit), "tables": tables(d)}
    with fileio.atomic_path(out_dir / "report.pdf") as tmp_pdf:
        pdf_writer = multiprocessing.get_context("fork").Process(target=_write_pdf, args=(d, tmp_pdf, text),
                                                                 name="report-pdf")
        pdf_writer.start()
        try:
            rendered = {}  # section -> [(name, png bytes, caption)]
            for section, name, fig, caption in _figures(d):
                buf = io.BytesIO()
                fig.savefig(buf, format="png", bbox_inches="tight")
                plt.close(fig)
                fileio.write_bytes(fig_dir / f"{name}.png", buf.getvalue())
                rendered.setdefault(section, []).append((name, buf.getvalue(), caption))
        except BaseException:
            pdf_writer.terminate()  # no PDF without the rest of the report
            raise
        finally:
            pdf_writer.join()
        if pdf_writer.exitcode != 0:
            raise PipelineError(f"drawing report.pdf failed (exit {pdf_writer.exitcode}, traceback above): "
                                f"fix the figure it names and rerun `dvc repro report`")
    fileio.write_bytes(out_dir / "report.html", _html(title(d), text, rendered).encode())
    return {name: caption for figs in rendered.values() for name, _, caption in figs}


def _figures(d: Inputs):
    """(section, name, figure, caption) for every figure this run has, in report order."""
    for section, figures in FIGURES.items():
        for name, make in figures:
            made = make(d)
            if made is not None:
                yield (section, name, *made)


def _write_pdf(d: Inputs, path: Path, text: dict) -> None:
    with PdfPages(path) as pdf:
        _pdf_text_page(pdf, title(d), [(SECTIONS[0], text["findings"]), (SECTIONS[1], text["setup"])])
        for section in SECTIONS[2:]:
            heading = section
            for table_title, header, rows in text["tables"].get(section, []):
                _pdf_table_page(pdf, heading, table_title, header, rows)
                heading = None
            for name, make in FIGURES.get(section, []):
                made = make(d)
                if made is not None:
                    _pdf_figure_page(pdf, made[0], heading, made[1])
                    plt.close(made[0])
                    heading = None
        _pdf_reproduce_page(pdf)


def _pdf_text_page(pdf, heading, blocks):
    import textwrap

    fig = plt.figure(figsize=(11, 8.5))
    fig.text(0.05, 0.95, heading, fontsize=16 if len(heading) < 80 else 12, weight="bold")
    y = 0.90
    for section, lines in blocks:
        fig.text(0.05, y, section, fontsize=13, weight="bold")
        y -= 0.04
        for line in lines:
            for i, part in enumerate(textwrap.wrap(line, 150)):
                fig.text(0.05 if i == 0 else 0.065, y, ("- " if i == 0 else "") + part, fontsize=8)
                y -= 0.022
        y -= 0.02
    pdf.savefig(fig)
    plt.close(fig)


def _pdf_table_page(pdf, section, table_title, header, rows):
    fig = plt.figure(figsize=(11, 8.5))
    if section:
        fig.text(0.05, 0.95, section, fontsize=13, weight="bold")
    if table_title:
        fig.text(0.05, 0.91, table_title, fontsize=9)
    ax = fig.add_axes([0.03, 0.05, 0.94, 0.83])
    ax.axis("off")
    # One setting per line, and a mean apart from its interval: seven optimizers fit the page.
    cells = [[c.replace(", ", "\n").replace(" +/- ", "\n+/- ").replace(" (", "\n(").replace(" / ", "\n/ ")
              for c in row] for row in rows]
    lines = max(c.count("\n") + 1 for row in cells for c in row)
    table = ax.table(cellText=cells, colLabels=[h.replace(" (", "\n(").replace(": ", ":\n") for h in header],
                     loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7 if len(rows) <= 8 else 6)
    unit = min(0.045, 1.0 / (3 + len(rows) * lines))  # one text line, as a fraction of the table's axes
    for (row, _), cell in table.get_celld().items():
        cell.set_height(unit * (3 if row == 0 else lines))
    pdf.savefig(fig)
    plt.close(fig)


def _pdf_figure_page(pdf, fig, section, caption):
    """Grow the figure to make room for the section title above and the caption below."""
    import textwrap

    w, h = fig.get_size_inches()
    lines = textwrap.wrap(caption, int((w - 0.4) * 16))  # 8-point text: about 16 characters per inch
    top, bottom = (0.6 if section else 0.2), 0.55 + 0.15 * len(lines)  # inches
    total = h + top + bottom
    fig.set_size_inches(w, total)
    fig.subplots_adjust(top=1 - (top + 0.35) / total, bottom=(bottom + 0.45) / total)
    if section:
        fig.text(0.02, 1 - 0.3 / total, section, fontsize=13, weight="bold", va="top")
    fig.text(0.02, 0.15 / total, "\n".join(lines), fontsize=8, va="bottom")
    pdf.savefig(fig)


def _pdf_reproduce_page(pdf):
    fig = plt.figure(figsize=(11, 3))
    fig.text(0.05, 0.85, "How to reproduce", fontsize=13, weight="bold")
    for i, line in enumerate(REPRODUCE):
        fig.text(0.05, 0.65 - 0.15 * i, line, family="monospace", fontsize=9)
    pdf.savefig(fig)
    plt.close(fig)


def _html(heading, text, rendered) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{esc(heading)}</title><style>body{{font-family:sans-serif;max-width:60em;"
             "margin:2em auto;padding:0 1em;line-height:1.4}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:.3em .5em}img{max-width:100%}figcaption{font-size:90%;color:#333}"
             "pre{background:#f4f4f4;padding:.6em}</style></head><body>",
             f"<h1>{esc(heading)}</h1>",
             f"<h2>{esc(SECTIONS[0])}</h2><ul id='key-findings'>", *[f"<li>{esc(x)}</li>" for x in text["findings"]],
             "</ul>", f"<h2>{esc(SECTIONS[1])}</h2><ul>", *[f"<li>{esc(x)}</li>" for x in text["setup"]], "</ul>"]
    for section in SECTIONS[2:]:
        parts.append(f"<h2>{esc(section)}</h2>")
        for table_title, header, rows in text["tables"].get(section, []):
            parts += [f"<p>{esc(table_title)}</p>" if table_title else "", "<table><tr>",
                      *[f"<th>{esc(h)}</th>" for h in header], "</tr>"]
            parts += [f"<tr>{''.join(f'<td>{esc(c)}</td>' for c in row)}</tr>" for row in rows]
            parts.append("</table>")
        for name, png, caption in rendered.get(section, []):
            data = base64.b64encode(png).decode()
            parts.append(f"<figure id='{name}'><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts += ["<h3>How to reproduce</h3><pre>", esc("\n".join(REPRODUCE)), "</pre></body></html>"]
    return "\n".join(parts)
