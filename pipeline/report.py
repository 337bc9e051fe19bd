"""`report` stage: reports/report.html (self-contained, figures embedded) and reports/report.pdf
from the same sections, figures and captions, plus each figure as a PNG under reports/figures/.

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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from pipeline import fileio, quadratic  # noqa: E402
from pipeline.config import Params  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402

COLORS = {"sgd": "tab:blue", "momentum": "tab:purple", "adagrad": "tab:orange", "rmsprop": "tab:green"}
LABELS = {"sgd": "SGD", "momentum": "Momentum", "adagrad": "Adagrad", "rmsprop": "RMSProp"}
PACKAGES = ("tensorflow-cpu", "keras", "optuna", "mlflow", "dvc", "numpy", "pandas", "matplotlib")
SECTIONS = ("1. Setup", "2. Results", "3. Convergence", "4. Effective learning rate", "5. The search",
            "6. From scratch vs Keras, and how to reproduce")

plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                     "pdf.fonttype": 42})  # 42: real text in the PDF, so it can be searched and extracted


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
            self.trials = {o: pd.read_csv(Path(studies_dir) / o / "trials.csv") for o in params.study.optimizers}
        except FileNotFoundError as e:
            raise PipelineError(f"{e.filename} not found: run `dvc repro evaluate` first") from None
        self.optimizers = list(params.study.optimizers)
        self.floor = self.summary["floor"]
        self.opt = self.summary["optimizers"]


def _fmt_hyper(h: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in h.items())


# --- figures: each returns (figure, caption) -------------------------------------------------

def _tuned_and_book(d: Inputs, ax, column: str, lowest=None) -> None:
    """Per optimizer, the mean over seeds of the tuned (solid, with a min-max band) and book
    (dashed) curves of one column of curves.csv."""
    for o in d.optimizers:
        for family, style in (("tuned", "-"), ("book", "--")):
            c = d.curves[(d.curves.optimizer == o) & (d.curves.family == family)]
            g = c.groupby("examples")[column]
            ax.plot(g.mean().index, g.mean(), style, color=COLORS[o], label=f"{LABELS[o]} {family}")
            if family == "tuned":
                ax.fill_between(g.min().index, g.min().clip(lower=lowest), g.max(), color=COLORS[o], alpha=0.15)


def fig_convergence(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _tuned_and_book(d, ax, "loss")
    ax.axhline(d.floor, color="k", lw=0.8, ls=":", label="least-squares floor")
    ax.set(xlabel="examples seen", ylabel="training loss (mean of (y_hat - y)^2 / 2)",
           ylim=(d.floor - 0.005, min(0.5, ax.get_ylim()[1])))
    ax.legend(ncol=2, fontsize=7)
    finals = "; ".join(f"{LABELS[o]} {d.opt[o]['tuned_final_loss']['mean']:.4f} (book {d.opt[o]['book_final_loss']['mean']:.4f})"
                       for o in d.optimizers)
    return fig, (f"Loss over training, tuned (solid, band = min to max over {len(d.summary['seeds'])} seeds) and "
                 f"book settings (dashed). Final losses: {finals}; floor {d.floor:.4f}.")


def fig_excess(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _tuned_and_book(d, ax, "excess_loss", lowest=1e-9)  # a band reaching 0 has no log
    ax.set_yscale("log")
    ax.set(xlabel="examples seen", ylabel="excess loss over the floor (log scale)")
    ax.legend(ncol=2, fontsize=7)
    ex = "; ".join(f"{LABELS[o]} {d.opt[o]['tuned_final_loss']['mean'] - d.floor:.2e}" for o in d.optimizers)
    return fig, f"Excess loss over the least-squares floor {d.floor:.4f}, log scale. Final excess (tuned, mean): {ex}."


def fig_effective_lr(d: Inputs):
    fig, axes = plt.subplots(2, len(d.optimizers), figsize=(7.5, 5.2), sharey=True, squeeze=False)
    notes = []
    for row, family in enumerate(("tuned", "book")):
        for ax, o in zip(axes[row], d.optimizers):
            c = d.coords[(d.coords.optimizer == o) & (d.coords.family == family)]
            for coord, g in c.groupby("coordinate", sort=False):
                ax.plot(g.examples, g.effective_lr, label=coord)
            ax.set_yscale("log")
            hyper = d.opt[o][f"{family}_hyperparams"]
            ax.set_title(f"{LABELS[o]} {family}\n{_fmt_hyper(hyper)}", fontsize=8)
            first = c[c.examples == c.examples.min()].effective_lr.mean()
            last = c[c.examples == c.examples.max()].effective_lr.mean()
            second_half = c[c.examples >= c.examples.max() / 2].groupby("examples").effective_lr.mean()
            memory = f", memory {1 / (1 - hyper['gamma']):.0f} steps" if "gamma" in hyper else ""
            notes.append(f"{LABELS[o]} {family}{memory}: last/first {last / first:.2f}, "
                         f"second half last/first {second_half.iloc[-1] / second_half.iloc[0]:.2f}")
        axes[row][0].set_ylabel(f"{family}: lr / sqrt(s + eps)")
    for ax in axes[1]:
        ax.set_xlabel("examples seen")
    axes[0][-1].legend(fontsize=6, title="coordinate", title_fontsize=6)
    fig.tight_layout()
    steps = d.params.train.epochs * -(-d.stats["rows"] // d.params.train.batch_size)
    return fig, (f"Per-coordinate effective learning rate (mean over seeds) for the tuned (top) and book (bottom) "
                 f"settings, over a run of {steps} steps. Ratios of the mean rate, last record to first: "
                 f"{'; '.join(notes)}. Adagrad's sum of squared gradients only grows, so its rate keeps falling; "
                 f"RMSProp's leaky average forgets after about 1/(1 - gamma) steps, so with a memory shorter than the "
                 f"run its rate levels off, and with a longer one it decays like Adagrad's.")


def fig_gamma_weights(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    t = np.arange(0, 121)
    for gamma in (0.5, 0.9, 0.95, 0.99):
        line, = ax.plot(t, (1 - gamma) * gamma ** t, label=f"gamma = {gamma} (memory {1 / (1 - gamma):.0f} steps)")
        if 1 / (1 - gamma) <= t[-1]:
            ax.axvline(1 / (1 - gamma), color=line.get_color(), ls=":", lw=1)
    ax.set(xlabel="steps into the past, t", ylabel="weight (1 - gamma) gamma^t", yscale="log", ylim=(1e-6, 1))
    ax.legend(fontsize=7)
    best = d.opt.get("rmsprop", {}).get("tuned_hyperparams", {}).get("gamma")
    tuned = f" The tuned RMSProp gamma {best:.4f} remembers about {1 / (1 - best):.0f} steps." if best else ""
    return fig, f"Weights RMSProp gives past squared gradients; dotted lines mark the memory 1/(1 - gamma).{tuned}"


def fig_quadratic(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x1, x2 = np.meshgrid(np.linspace(-5.5, 1.0, 200), np.linspace(-3.0, 1.5, 200))
    ax.contour(x1, x2, quadratic.f(np.stack([x1, x2], axis=-1)), levels=20, colors="0.75", linewidths=0.6)
    ends = []
    for o in d.optimizers:
        q = d.quad[d.quad.optimizer == o]
        h = _fmt_hyper(d.params.evaluate.quadratic[o])
        ax.plot(q.x1, q.x2, "-o", ms=2.5, color=COLORS[o], label=f"{LABELS[o]} ({h})")
        ends.append(f"{LABELS[o]} ({q.x1.iloc[-1]:.4f}, {q.x2.iloc[-1]:.4f})")
    ax.set(xlabel="x1", ylabel="x2", aspect="equal")
    ax.legend(fontsize=7, loc="lower right")
    return fig, (f"{d.params.evaluate.quadratic_steps} steps on f = 0.1 x1^2 + 2 x2^2 from (-5, -2). "
                 f"End points: {'; '.join(ends)}.")


def fig_history(d: Inputs):
    fig, axes = plt.subplots(1, len(d.optimizers), figsize=(7.5, 3.0), sharey=True)
    notes = []
    for ax, o in zip(np.atleast_1d(axes), d.optimizers):
        t = d.trials[o]
        ok = t[t.diverged == 0]
        ax.plot(ok.number, ok.objective - d.floor, ".", color=COLORS[o], ms=4, label="trial")
        best = (t.objective.fillna(np.inf)).cummin() - d.floor
        ax.plot(t.number, best, "k-", lw=1, label="best so far")
        if (t.diverged == 1).any():
            ax.plot(t.number[t.diverged == 1], np.full((t.diverged == 1).sum(), ok.objective.max() - d.floor), "rx",
                    ms=4, label="diverged")
        ax.set(title=LABELS[o], xlabel="trial", yscale="log")
        notes.append(f"{LABELS[o]} best {d.opt[o]['study_best']:.5f} after {d.opt[o]['trials']} trials "
                     f"({d.opt[o]['diverged_trials']} diverged)")
    np.atleast_1d(axes)[0].set_ylabel("objective - floor (log)")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig, f"Optimization history of each study: {'; '.join(notes)}."


def fig_landscape(d: Inputs):
    if "rmsprop" not in d.optimizers:
        return None
    land = d.landscape[d.landscape.optimizer == "rmsprop"]
    lrs, gammas = np.sort(land.lr.unique()), np.sort(land.gamma.unique())
    z = land.pivot_table(index="gamma", columns="lr", values="objective").reindex(index=gammas, columns=lrs)
    fig, ax = plt.subplots(figsize=(7, 4))
    mesh = ax.pcolormesh(lrs, 1 - gammas, np.log10(z.values - d.floor), shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log10(objective - floor); blank = diverged")
    t = d.trials["rmsprop"]
    ax.plot(t.lr, 1 - t.gamma, "w.", ms=4, label="study trials")
    best, grid_best = d.opt["rmsprop"]["tuned_hyperparams"], d.opt["rmsprop"]["grid_optimum_hyperparams"]
    ax.plot(best["lr"], 1 - best["gamma"], "r*", ms=12, label="study best")
    if grid_best:
        ax.plot(grid_best["lr"], 1 - grid_best["gamma"], "kP", ms=9, label="grid optimum")
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="1 - gamma (memory = 1 / (1 - gamma))")
    ax.legend(fontsize=7, loc="upper left")
    r = d.opt["rmsprop"]["regret"]
    return fig, (f"RMSProp's objective on a {len(lrs)} x {len(gammas)} grid of lr x gamma with the study's seeds, "
                 f"and the study's {len(t)} trials on it. Study best {_fmt_hyper(best)}; grid optimum "
                 f"{_fmt_hyper(grid_best or {})}; regret {r:.2e}.")


def fig_sensitivity(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for o in d.optimizers:
        land = d.landscape[d.landscape.optimizer == o]
        curve = land.groupby("lr").objective.min()  # for RMSProp: the best gamma at each lr
        ax.plot(curve.index, curve - d.floor, color=COLORS[o], label=f"{LABELS[o]} grid" + (" (best gamma)" if o == "rmsprop" else ""))
        t = d.trials[o]
        ax.plot(t.lr, t.objective - d.floor, ".", color=COLORS[o], ms=3, alpha=0.6)
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="objective - floor (log)")
    ax.legend(fontsize=7)
    spans = []
    for o in d.optimizers:
        land = d.landscape[(d.landscape.optimizer == o)]
        good = land[land.objective <= d.floor + 2 * (land.objective.min() - d.floor)]
        spans.append(f"{LABELS[o]} {good.lr.min():.2g} to {good.lr.max():.2g}")
    return fig, (f"Sensitivity to the learning rate: grid (lines) and study trials (dots). Learning rates within "
                 f"twice the best excess loss: {'; '.join(spans)}.")


def fig_budget(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.4))
    notes = []
    for o in d.optimizers:
        b = d.budget[d.budget.optimizer == o]
        optimum = d.opt[o]["grid_optimum"]
        ax.plot(b.trials, (b.best_so_far - optimum).clip(lower=1e-9), "-", color=COLORS[o], label=f"{LABELS[o]} TPE best so far")
        ax.plot(b.trials, (b.expected_best - optimum).clip(lower=1e-9), "--", color=COLORS[o], label=f"{LABELS[o]} random draw of n trials")
        notes.append(f"{LABELS[o]} {d.opt[o]['regret']:.1e}")
    ax.set(xscale="log", yscale="log", xlabel="number of trials", ylabel="regret: best - grid optimum (log)")
    ax.legend(fontsize=7, ncol=2)
    return fig, (f"Regret against the grid optimum as the budget grows: the study's best so far (solid) and the "
                 f"expected best of n trials drawn at random from it (dashed). Final regret: {'; '.join(notes)} "
                 f"(negative: the study beat the grid; shown clipped at 1e-9).")


def fig_framework(d: Inputs):
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for o in d.optimizers:
        k = d.curves[(d.curves.optimizer == o) & (d.curves.family == "framework")]
        seeds = k.seed.unique()
        ours = d.curves[(d.curves.optimizer == o) & (d.curves.family == "tuned") & d.curves.seed.isin(seeds)]
        ax.plot(ours.groupby("examples").loss.mean(), "-", color=COLORS[o], label=f"{LABELS[o]} from scratch")
        ax.plot(k.groupby("examples").loss.mean(), "o", mfc="none", color=COLORS[o], label=f"{LABELS[o]} Keras built-in")
    ax.set(xlabel="examples seen", ylabel="training loss", ylim=(d.floor - 0.005, 0.5))
    ax.legend(fontsize=7, ncol=2)
    gaps = "; ".join(f"{LABELS[o]} {d.opt[o]['keras_max_abs_diff']:.1e}" for o in d.optimizers)
    return fig, (f"Tuned settings trained by our engine (lines) and by tf.keras.optimizers through the book's eager "
                 f"loop (circles), same seeds {d.params.evaluate.framework_seeds} of them. Largest loss difference at "
                 f"any record: {gaps}.")


FIGURES = {  # section -> figures, in order
    SECTIONS[2]: [("convergence", fig_convergence), ("excess_loss", fig_excess)],
    SECTIONS[3]: [("effective_lr", fig_effective_lr), ("gamma_weights", fig_gamma_weights), ("quadratic", fig_quadratic)],
    SECTIONS[4]: [("optimization_history", fig_history), ("rmsprop_landscape", fig_landscape),
                  ("lr_sensitivity", fig_sensitivity), ("regret_vs_budget", fig_budget)],
    SECTIONS[5]: [("scratch_vs_keras", fig_framework)],
}


# --- text -----------------------------------------------------------------------------------

def setup_lines(d: Inputs, commit: str) -> list:
    p = d.params
    space = "; ".join(f"{h} [{r.low:g}, {r.high:g}] ({r.scale})" for h, r in p.study.search_space.items())
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


def results_table(d: Inputs) -> tuple:
    header = ["optimizer", "book settings", "tuned settings", "book final loss", "tuned final loss (95% CI)",
              "examples to floor (tuned)", "diverged trials", "trials"]
    rows = []
    for o in d.optimizers:
        s = d.opt[o]
        reach = s["tuned_examples_to_floor"]
        steps = f"{reach['median']:.0f} ({reach['seeds_reached']}/{reach['seeds']} seeds)" if reach["median"] else \
            f"never ({reach['seeds_reached']}/{reach['seeds']})"
        rows.append([LABELS[o], _fmt_hyper(s["book_hyperparams"]), _fmt_hyper(s["tuned_hyperparams"]),
                     f"{s['book_final_loss']['mean']:.5f}",
                     f"{s['tuned_final_loss']['mean']:.5f} +/- {s['tuned_final_loss']['ci95']:.5f}",
                     steps, str(s["diverged_trials"]), str(s["trials"])])
    return header, rows


REPRODUCE = ["make repro            # set up .venv and run dvc repro (download ... report)",
             "dvc params diff; dvc metrics show; dvc plots show",
             "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1"]


# --- rendering ------------------------------------------------------------------------------

def render(d: Inputs, out_dir: Path, commit: str) -> dict:
    """Write report.html, report.pdf and figures/*.png; return the figure files and captions.

    The PDF is drawn in a forked process while this one draws the PNGs: each figure is drawn
    once per format anyway, and the two halves take about as long as each other."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(d)
    setup = setup_lines(d, commit)
    with fileio.atomic_path(out_dir / "report.pdf") as tmp_pdf:
        pdf_writer = multiprocessing.get_context("fork").Process(
            target=_write_pdf, args=(d, tmp_pdf, setup, header, rows), name="report-pdf")
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
    fileio.write_bytes(out_dir / "report.html", _html(setup, header, rows, rendered).encode())
    return {name: caption for figs in rendered.values() for name, _, caption in figs}


def _figures(d: Inputs):
    """(section, name, figure, caption) for every figure this run has, in report order."""
    for section, figures in FIGURES.items():
        for name, make in figures:
            made = make(d)
            if made is not None:
                yield (section, name, *made)


def _write_pdf(d: Inputs, path: Path, setup, header, rows) -> None:
    with PdfPages(path) as pdf:
        _pdf_text_page(pdf, setup, header, rows)
        titled = set()
        for section, name, fig, caption in _figures(d):
            _pdf_figure_page(pdf, fig, None if section in titled else section, caption)
            titled.add(section)
            plt.close(fig)
        _pdf_reproduce_page(pdf)


def _pdf_text_page(pdf, setup, header, rows):
    import textwrap

    fig = plt.figure(figsize=(11, 8.5))
    fig.text(0.05, 0.95, "Optimizers on the airfoil data: SGD, Adagrad, RMSProp", fontsize=16, weight="bold")
    fig.text(0.05, 0.90, SECTIONS[0], fontsize=13, weight="bold")
    y = 0.86
    for line in setup:
        for part in textwrap.wrap(line, 150):
            fig.text(0.05, y, part, fontsize=8)
            y -= 0.025
    fig.text(0.05, y - 0.02, SECTIONS[1], fontsize=13, weight="bold")
    ax = fig.add_axes([0.03, 0.05, 0.94, y - 0.1])
    ax.axis("off")
    widths = [0.08, 0.14, 0.18, 0.09, 0.17, 0.16, 0.08, 0.06]
    table = ax.table(cellText=rows, colLabels=[h.replace(" (", "\n(") for h in header], loc="upper center",
                     cellLoc="center", colWidths=widths)
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.scale(1, 1.8)
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


def _html(setup, header, rows, rendered) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Optimizers on the airfoil data</title><style>body{font-family:sans-serif;max-width:60em;"
             "margin:2em auto;padding:0 1em;line-height:1.4}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:.3em .5em}img{max-width:100%}figcaption{font-size:90%;color:#333}"
             "pre{background:#f4f4f4;padding:.6em}</style></head><body>",
             "<h1>Optimizers on the airfoil data: SGD, Adagrad, RMSProp</h1>",
             f"<h2>{esc(SECTIONS[0])}</h2><ul>", *[f"<li>{esc(line)}</li>" for line in setup], "</ul>",
             f"<h2>{esc(SECTIONS[1])}</h2><table><tr>", *[f"<th>{esc(h)}</th>" for h in header], "</tr>"]
    for row in rows:
        parts += ["<tr>", *[f"<td>{esc(c)}</td>" for c in row], "</tr>"]
    parts.append("</table>")
    for section in SECTIONS[2:]:
        parts.append(f"<h2>{esc(section)}</h2>")
        for name, png, caption in rendered.get(section, []):
            data = base64.b64encode(png).decode()
            parts.append(f"<figure id='{name}'><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts += ["<h3>How to reproduce</h3><pre>", esc("\n".join(REPRODUCE)), "</pre></body></html>"]
    return "\n".join(parts)
