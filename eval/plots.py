"""The report's plots (matplotlib, Agg, no pyplot state): PNG bytes from leaderboard rows.

Every label is plain text (``text.parse_math`` off: a method called ``npo $\\foo{$`` is drawn as written,
never parsed as mathtext). Scatter points carry numbers placed where they collide with no other number or
marker (points at the same place share one label, "3,4"), and the legend maps each number to its row; the
gold model's star is drawn above every other marker. Values are drawn on linear axes as points, so a
position means the value itself (no bars with an automatic bottom).
"""
from __future__ import annotations

import functools
import io
import math
from typing import Any, Callable, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

SETTINGS: tuple[str, ...] = ("text", "visual", "multimodal")
EVALUATED = (("text", "text", "o"), ("image", "image", "s"), ("joint", "image+text", "^"))
GOLD_STYLE = dict(marker="*", s=260, color="gold", edgecolors="black", linewidths=0.8, zorder=10)
REF_MARKERS = ("s", "D", "P", "X", "v")  # reference rows other than the gold: target, base, ...
FORGET_KEY, RETAIN_KEY = "clear/all/forget", "clear/all/retain"
FORGET_PROB_KEY = "forget/all/probability"
RANK_KEY, MU_KEY = "forget/all/forget_quality_d", "all/all/model_utility"
# candidate label offsets in points: rings of 8 directions, nearest first
_OFFSETS = [(round(r * math.cos(a), 1), round(r * math.sin(a), 1)) for r in (7, 13, 20, 28)
            for a in (math.pi / 4 * i for i in (1, 3, 7, 5, 0, 2, 4, 6))]


def plain_text(fn: Callable[..., bytes]) -> Callable[..., bytes]:
    """Build and render the figure with mathtext off (labels are data, not markup)."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> bytes:
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return fn(*args, **kwargs)
    return wrapped


def png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def settings_of(rows: Sequence[Any]) -> list[str]:
    return [s for s in SETTINGS if any(r.setting == s for r in rows)] or ["all"]


def in_setting(rows: Sequence[Any], setting: str) -> list[Any]:
    """The rows of one forget setting's table: its methods and the reference rows (gold, target, base)."""
    return [r for r in rows if r.setting in (None, setting) or setting == "all"]


class Styles:
    """One number, colour and marker per row label, the same in every panel of a figure."""

    def __init__(self, rows: Sequence[Any]) -> None:
        labels = list(dict.fromkeys(r.label for r in sorted(rows, key=lambda r: (not r.is_gold, r.setting is not None))))
        self.number = {label: i + 1 for i, label in enumerate(labels)}
        refs = [r.label for r in rows if r.setting is None and not r.is_gold]
        methods = [label for label in labels if label not in refs]
        cmap = matplotlib.colormaps["tab20"]
        self.color = {label: cmap(i % 20) for i, label in enumerate(methods)}
        self.color |= {label: "dimgray" for label in refs}
        self.marker = {label: "o" for label in methods} | {
            label: REF_MARKERS[i % len(REF_MARKERS)] for i, label in enumerate(dict.fromkeys(refs))}
        self.gold = {r.label for r in rows if r.is_gold}

    def scatter(self, ax, row: Any, x: float, y: float) -> None:
        if row.label in self.gold:
            ax.scatter([x], [y], **GOLD_STYLE)
        else:
            ax.scatter([x], [y], s=42, color=self.color[row.label], marker=self.marker[row.label],
                       edgecolors="black", linewidths=0.4, zorder=3)

    def handles(self, labels: Sequence[str]) -> list[Line2D]:
        out = []
        for label in sorted(set(labels), key=self.number.get):
            if label in self.gold:
                style = dict(marker="*", color="gold", markeredgecolor="black", markersize=13)
            else:
                style = dict(marker=self.marker[label], color=self.color[label], markeredgecolor="black", markersize=7)
            out.append(Line2D([], [], linestyle="none", label=f"{self.number[label]}  {label}", **style))
        return out


def place_labels(fig: Figure, ax, points: Sequence[tuple[float, float, str]]) -> None:
    """Annotate each (x, y, text) at the first offset whose text box overlaps no marker, no label placed
    before and stays inside the axes; points within 4 px of each other share one label."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    groups: list[tuple[float, float, list[str], Any]] = []
    for x, y, text in points:
        px = ax.transData.transform((x, y))
        for g in groups:
            if abs(g[3][0] - px[0]) < 4 and abs(g[3][1] - px[1]) < 4:
                g[2].append(text)
                break
        else:
            groups.append((x, y, [text], px))
    marker_boxes = [(px[0] - 6, px[1] - 6, px[0] + 6, px[1] + 6) for *_, px in groups]
    taken: list[tuple[float, float, float, float]] = []
    frame = ax.get_window_extent(renderer)
    for x, y, texts, _ in groups:
        label = ",".join(dict.fromkeys(texts))
        best = None
        for dx, dy in _OFFSETS:
            ann = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, zorder=11,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center")
            bb = ann.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            clash = sum(_overlap(box, other) for other in taken + marker_boxes)
            clash += 0 if frame.x0 <= bb.x0 and bb.x1 <= frame.x1 and frame.y0 <= bb.y0 and bb.y1 <= frame.y1 else 1e6
            if best is None or clash < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clash, ann, box)
            else:
                ann.remove()
            if clash == 0:
                break
        taken.append(best[2])


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _limits(values: Sequence[float], low: float | None = None, high: float | None = None) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.12 or max(abs(hi) * 0.12, 0.02)
    lo, hi = lo - pad, hi + pad
    return (max(lo, low) if low is not None else lo, min(hi, high) if high is not None else hi)


@plain_text
def scatter_plot(rows: Sequence[Any], x_key: str, y_key: str, labels: tuple[str, str, str]) -> bytes:
    """One panel per forget setting of (row[x_key], row[y_key]), numbered points, one legend of the numbers.
    ``labels``: (x axis, y axis, title)."""
    settings = settings_of(rows)
    drawn = [r for r in rows if x_key in r.metrics and y_key in r.metrics]
    fig = Figure(figsize=(4.3 * len(settings) + 3.2, 4.6))
    fig.subplots_adjust(left=0.08, right=0.97 - 2.6 / fig.get_figwidth(), bottom=0.13, top=0.86, wspace=0.25)
    axes = fig.subplots(1, len(settings), sharex=True, sharey=True, squeeze=False)[0]
    styles = Styles(drawn)
    if drawn:
        xs, ys = [r.metrics[x_key] for r in drawn], [r.metrics[y_key] for r in drawn]
        axes[0].set_xlim(*_limits(xs, 0.0, None if x_key != RANK_KEY else 1.0))
        axes[0].set_ylim(*_limits(ys, 0.0, None))
    for ax, setting in zip(axes, settings):
        members = in_setting(drawn, setting)
        for row in members:
            styles.scatter(ax, row, row.metrics[x_key], row.metrics[y_key])
        place_labels(fig, ax, [(r.metrics[x_key], r.metrics[y_key], str(styles.number[r.label])) for r in members])
        ax.set_title(f"{setting} forgetting" if setting != "all" else "all models", fontsize=10)
        ax.set_xlabel(labels[0], fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(labels[1], fontsize=9)
    fig.suptitle(labels[2], fontsize=11)
    if drawn:
        fig.legend(handles=styles.handles([r.label for r in drawn]), loc="upper left", fontsize=8,
                   bbox_to_anchor=(0.98 - 2.5 / fig.get_figwidth(), 0.86), title="rows (★ gold)", frameon=False)
    missing = sorted({r.label for r in rows} - {r.label for r in drawn})
    if missing:
        fig.text(0.01, 0.005, "not drawn (no value): " + ", ".join(missing), fontsize=7, color="dimgray")
    return png(fig)


def forget_retain_plot(rows: Sequence[Any]) -> bytes:
    """The trade-off: what the model still knows of the forget set (mean answer probability, lower = more
    forgotten) against CLEAR's Retain column (higher = kept). Not CLEAR's Forget column on x: it is not monotone
    in knowledge (a model sure of the truth scores ~0 like one that forgot; eval.claims)."""
    return scatter_plot(rows, FORGET_PROB_KEY, RETAIN_KEY, (
        f"Forget ↓ ({FORGET_PROB_KEY})", f"Retain ↑ ({RETAIN_KEY})",
        "forget ↓ vs retain ↑ (best: top left)"))


def tradeoff_plot(rows: Sequence[Any]) -> bytes:
    return scatter_plot(rows, MU_KEY, RANK_KEY, (
        f"model utility ↑ ({MU_KEY})", f"forget quality D vs gold ↓ ({RANK_KEY})",
        "forget quality (KS D, gold = 0) vs model utility (best: bottom right)"))


COST_KEY = "cost/training/wall_seconds"


def cost_plot(rows: Sequence[Any]) -> bytes:
    """What forgetting cost: each unlearning run's wall time against its forget quality D (reference rows,
    whose cost is a finetune's, are left out)."""
    return scatter_plot([r for r in rows if r.setting is not None], COST_KEY, RANK_KEY, (
        f"unlearning time, s ↓ ({COST_KEY})", f"forget quality D vs gold ↓ ({RANK_KEY})",
        "cost vs forgetting (best: bottom left)"))


@plain_text
def fq_modality_plot(rows: Sequence[Any]) -> bytes:
    """Forget quality D on each evaluated modality (text, image, image+text), one panel per forget setting."""
    settings = settings_of(rows)
    fig = Figure(figsize=(10, 2.9 * len(settings) + 0.6))
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    for ax, setting in zip(axes, settings):
        members = in_setting(rows, setting)
        for j, (m, title, marker) in enumerate(EVALUATED):
            k = f"forget/{m}/forget_quality_d"
            pts = [(i + (j - 1) * 0.18, r.metrics[k]) for i, r in enumerate(members) if k in r.metrics]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=36, zorder=3,
                       label=f"{title} (forget/{m})", color=f"C{j}", edgecolors="black", linewidths=0.4)
        ax.set_xticks(range(len(members)), [r.label for r in members], rotation=25, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(members) - 0.4)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("KS D vs gold ↓", fontsize=9)
        ax.set_title(f"{setting} forgetting" if setting != "all" else "all models", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(title="evaluated modality", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("forget quality on each evaluated modality (KS D vs the gold model, the same n per modality; "
                 "0 = the gold's distribution)", fontsize=10)
    fig.tight_layout()
    return png(fig)


@plain_text
def settings_plot(rows: Sequence[Any], panels: Sequence[tuple[str, str]] = (
        (RANK_KEY, "forget quality D ↓"), (FORGET_KEY, "CLEAR Forget ↓"), (MU_KEY, "model utility ↑"))) -> bytes:
    """Each method across the forget settings (text / visual / multimodal): one line per method label, the
    reference rows as horizontal lines."""
    settings = [s for s in SETTINGS if any(r.setting == s for r in rows)]
    methods = list(dict.fromkeys(r.label for r in rows if r.setting is not None))
    refs = [r for r in rows if r.setting is None]
    styles = Styles(rows)
    fig = Figure(figsize=(4.0 * len(panels) + 2.8, 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (k, title) in zip(axes, panels):
        for label in methods:
            pts = [(i, r.metrics[k]) for i, s in enumerate(settings) for r in rows
                   if r.label == label and r.setting == s and k in r.metrics]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=styles.color[label], label=label)
        for ref in refs:
            if k in ref.metrics:
                ax.axhline(ref.metrics[k], linestyle="--" if not ref.is_gold else "-", linewidth=1.2,
                           color="goldenrod" if ref.is_gold else "gray", label=f"{ref.label} (reference)")
        ax.set_xticks(range(len(settings)), settings)
        ax.set_xlim(-0.3, len(settings) - 0.7)
        ax.set_xlabel("forget setting (the modality unlearned)", fontsize=9)
        ax.set_title(f"{title}\n({k})", fontsize=9)
        ax.grid(True, alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle("each method across forget settings", fontsize=11)
    fig.tight_layout()
    return png(fig)


@plain_text
def curve_plot(label: str, points: dict[str, list[tuple[float, float]]]) -> bytes:
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    for metric, pts in sorted(points.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=metric)
    ax.set_xlabel("step")
    ax.set_title(f"unlearning curve: {label}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return png(fig)


@plain_text
def attacks_plot(rows: Sequence[Any]) -> bytes:
    """Each attack's recovery Δ of the pooled forget probability per setting (one panel per attack), one point
    per model, numbered as in the legend; 0 = the attack changed nothing."""
    attacked = [r for r in rows if r.attacks]
    names = list(dict.fromkeys(a for r in attacked for a in r.attacks))
    styles = Styles(attacked)
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 3.0, 3.8 * nrows + 0.6))
    grid = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        settings = list(dict.fromkeys(s for r in attacked for s in r.attacks.get(name, {})))
        for j, r in enumerate(attacked):
            pts = [(i + (j - len(attacked) / 2) * 0.5 / max(len(attacked), 1), v["probability"])
                   for i, s in enumerate(settings) if (v := r.attacks.get(name, {}).get(s)) and
                   v["probability"] is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=30, zorder=3, edgecolors="black",
                           linewidths=0.3, color="gold" if r.label in styles.gold else styles.color[r.label],
                           marker=styles.marker.get(r.label, "*"))
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(settings) - 0.4)
        ax.set_title(name, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    for row in grid:
        row[0].set_ylabel("Δ forget probability ↓", fontsize=9)
    fig.legend(handles=styles.handles([r.label for r in attacked]), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=7, frameon=False, title="models")
    fig.suptitle("recovery under each attack (points; 0 = no recovery)", fontsize=11)
    fig.tight_layout()
    return png(fig)


@plain_text
def crossmodal_plot(matrices: dict[str, dict[str, dict[str, float]]], title: str) -> bytes:
    """One 3 x 3 heat map per method (forget setting x evaluated modality), values written in each cell."""
    methods = list(matrices)
    ncols = min(4, max(len(methods), 1))
    nrows = math.ceil(len(methods) / ncols)
    fig = Figure(figsize=(3.3 * ncols + 1.2, 2.9 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    values = [v for m in matrices.values() for row in m.values() for v in row.values()]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(methods):
            ax.set_axis_off()
            continue
        grid = [[matrices[methods[k]].get(s, {}).get(m, math.nan) for m in ("text", "image", "joint")]
                for s in SETTINGS]
        image = ax.imshow(grid, vmin=lo, vmax=hi if hi > lo else lo + 1e-9, cmap="viridis")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "—" if math.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=7,
                        color="white" if not math.isnan(v) and v < (lo + hi) / 2 else "black")
        ax.set_xticks(range(3), ["text", "image", "img+txt"], fontsize=7)
        ax.set_yticks(range(3), list(SETTINGS) if k % ncols == 0 else [], fontsize=7)
        ax.set_title(methods[k], fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.7)
    fig.suptitle(f"{title}: forget setting (rows) → evaluated modality (columns)", fontsize=10)
    return png(fig)


@plain_text
def recovery_curves_plot(rows: Sequence[Any]) -> bytes:
    """The relearning attack's recovery curves: the pooled forget probability of its curve probes over the
    finetuning steps, one panel per setting, one line per model (step 0 = the model unattacked)."""
    curves = {}  # (attack, setting) -> [(row, [(step, value)])]
    for r in rows:
        for attack, settings in r.attacks.items():
            for name, v in settings.items():
                if v.get("curve"):
                    curves.setdefault((attack, name), []).append((r, v["curve"]))
    styles = Styles([r for lines in curves.values() for r, _ in lines])
    fig = Figure(figsize=(4.2 * min(len(curves), 3) + 3.0, 3.6 * math.ceil(len(curves) / 3) + 0.6))
    grid = fig.subplots(math.ceil(len(curves) / 3), min(len(curves), 3), squeeze=False)
    for ax in list(grid.flat)[len(curves):]:
        ax.set_axis_off()
    for ax, ((attack, name), lines) in zip(grid.flat, curves.items()):
        for r, pts in lines:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=1,
                    color="gold" if r.label in styles.gold else styles.color[r.label])
        ax.set_title(f"{attack}: {name}", fontsize=10)
        ax.set_xlabel("finetuning step", fontsize=9)
        ax.grid(True, alpha=0.3)
    for row in grid:
        row[0].set_ylabel("forget probability (pooled) ↓", fontsize=9)
    fig.legend(handles=styles.handles([r.label for lines in curves.values() for r, _ in lines]), fontsize=7,
               loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="models")
    fig.suptitle("recovery curves of the relearning attack (a line per model and forget setting)", fontsize=11)
    fig.tight_layout()
    return png(fig)
