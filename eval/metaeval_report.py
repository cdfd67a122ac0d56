"""The meta-evaluation's report (the metaeval report stage of ``clearbench run``; docs/metaeval.md).

From the pool manifest (clearbench.metaeval: every model's exposure, counted from its training data, its result
file and attack results) it writes ``metaeval.json`` (every judged key: faithfulness, its robustness per attack
setting, the cross-modal separations), ``metaeval.md`` (the pool; per modality one table ranking the forget-side
metrics by faithfulness beside their robustness; the cross-modal table; the controls; the suggested columns) and
``metaeval.png`` (per modality the best-separating keys with their intervals and their AUC after each attack).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from clearbench.provenance import write_json_atomic, write_text_atomic
from eval.aggregate import MetricOptions
from eval.attacks.result import load_result as load_attack_result
from eval.metaeval import (ATTACK_SEP, LEVEL, MODALITIES, POOLED, VERSION, attacked, faithfulness, model_values, parts,
                           robustness, worst_auc)
from eval.results import load_result

FORGET_SCOPES = ("forget", "mia", "clear")  # the scopes whose keys measure the forget authors
COLUMNS = (*MODALITIES, POOLED)
ROBUST_ENOUGH = 0.75  # a suggested column keeps at least this AUC after every attack setting
PLOT_KEYS = 14


def load_pool(manifest: Mapping[str, Any]) -> tuple[dict, dict, dict, dict]:
    """(values {model: {key: v}}, exposed {model: [modalities]}, attacked pairs {model: {setting: (before,
    after)}}, the reference gold's aggregates) of the manifest's models."""
    gold = load_result(manifest["reference"]["result"])["aggregates"]["metrics"]
    values, exposed, pairs = {}, {}, {}
    for m in manifest["models"]:
        result = load_result(m["result"])
        attacks = [load_attack_result(p) for p in m.get("attacks", {}).values()]
        values[m["name"]] = model_values(result, attacks)
        exposed[m["name"]] = list(m["exposed"])
        options = MetricOptions.from_dict(result["aggregates"]["options"])
        pairs[m["name"]] = {s: ba for r in attacks for s, ba in attacked(r, options).items()}
    return values, exposed, pairs, gold


def column_of(k: str) -> str:
    return parts(k)[1].partition("@")[0]


def is_attack_key(k: str) -> bool:
    return ATTACK_SEP in parts(k)[0]


def is_forget_key(k: str) -> bool:
    """An evaluation key about the forget authors (CLEAR's columns: its forget and FQ columns only)."""
    scope, _, metric = parts(k)
    return scope in FORGET_SCOPES and (scope != "clear" or metric.startswith(("forget", "fq")))


def ranking(rows: Mapping[str, Mapping[str, Any]], column: str, attack: bool = False) -> list[str]:
    """The forget-side evaluation keys (``attack``: the attack scores) of one modality column, most faithful first
    (AUC, then the interval's lower end)."""
    keys = [k for k in rows if (is_attack_key(k) if attack else is_forget_key(k)) and column_of(k) == column]
    return sorted(keys, key=lambda k: (-rows[k]["auc"], -rows[k]["ci"][0], k))


def leak(row: Mapping[str, Any], column: str) -> float:
    """How far a key lights up for forget knowledge given only in other modalities: the cross-modal AUC of those
    one-modality models against the unexposed ones farthest from 0.5 (0.5: none, or none measured)."""
    other = [sep["auc"] for g, sep in row.get("cross", {}).items() if sep and column not in g.split("+")]
    return max(other, key=lambda a: abs(a - 0.5), default=0.5)


def suggest(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """Per modality column, the suggested leaderboard column: among the evaluation's forget-split keys (not attack
    scores) whose AUC after every attack stays >= ROBUST_ENOUGH (all of them without attacks), the one with the
    highest lower interval end; ties (a pool that every good key separates perfectly) go to the key most specific to
    its modality (cross-modal AUC of the other modalities' one-modality models closest to 0.5), then to ranking order."""
    out: dict[str, str | None] = {}
    for column in COLUMNS:
        ok = [k for k in ranking(rows, column) if parts(k)[0] == "forget" and (rows[k]["worst_auc"] is None or rows[k]["worst_auc"] >= ROBUST_ENOUGH)]
        out[column] = max(ok, key=lambda k: (rows[k]["ci"][0], rows[k]["auc"], -abs(leak(rows[k], column) - 0.5)),
                          default=None)
    return out


def build_report(manifest: Mapping[str, Any], out_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Judge every metric on the pool of ``manifest`` and write the report files to ``out_dir``."""
    values, exposed, pairs, gold = load_pool(manifest)
    rows = faithfulness(values, exposed, gold, n_boot, seed)
    robust = robustness(pairs, exposed, gold, n_boot, seed) if any(pairs.values()) else {}
    for k, row in rows.items():
        row["robustness"] = robust.get(k, {})
        row["worst_auc"] = worst_auc(row["robustness"])
    settings = sorted({s for p in pairs.values() for s in p})
    report = {"version": VERSION, "level": LEVEL, "bootstrap": n_boot, "seed": seed, "forget": manifest["forget"],
              "models": {m["name"]: {"group": m["group"], "exposed": m["exposed"]} for m in manifest["models"]},
              "settings": settings, "keys": rows, "suggested": suggest(rows)}
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "metaeval.json", report)
    write_text_atomic(out_dir / "metaeval.md", markdown(manifest, report))
    plot(report, out_dir / "metaeval.png")
    return report


# ------------------------------------------------------------------------------------- markdown
def _auc(sep: Mapping[str, Any] | None) -> str:
    return "" if sep is None else f"{sep['auc']:.2f} [{sep['ci'][0]:.2f}, {sep['ci'][1]:.2f}]"


def _table(header: Sequence[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(x) + " |" for x in lines)]


def pool_table(manifest: Mapping[str, Any]) -> list[str]:
    lines = []
    for m in manifest["models"]:
        seen = "/".join(str(m["forget_records"].get(x, 0)) for x in MODALITIES)
        lines.append([m["name"], m["group"], m["exposure"], seen, m["parameterisation"], str(m["seed"]),
                      f"{m['length']:g}", f"{m['run'].get('seconds', 0):.0f}"])
    total = sum(m["run"].get("seconds", 0) for m in manifest["models"]) / 60
    return _table(["model", "group", "exposure", "forget records seen (text/image/joint)", "parameterisation", "seed",
                   "length", "finetune s"], lines) + ["", f"Finetuning the pool took {total:.1f} stage-minutes."]


def modality_table(report: Mapping[str, Any], column: str) -> list[str]:
    rows, settings = report["keys"], report["settings"]
    lines = []
    for i, k in enumerate(ranking(rows, column), 1):
        r = rows[k]
        worst = "" if r["worst_auc"] is None else f"{r['worst_auc']:.2f}"
        after = [f"{r['robustness'][s]['auc']:.2f}" if s in r["robustness"] else "" for s in settings]
        lines.append([str(i), f"`{k}`", _auc(r), f"{r['n_pos']}/{r['n_neg']}", _auc(r["clean"]), worst, *after])
    return _table(["#", "key", f"AUC [{LEVEL:.0%} CI]", "n+/n-", "all vs none", "worst after attack",
                   *(f"after {s}" for s in settings)], lines)


def attack_table(report: Mapping[str, Any], column: str) -> list[str]:
    rows = report["keys"]
    lines = [[str(i), f"`{k}`", _auc(rows[k]), f"{rows[k]['n_pos']}/{rows[k]['n_neg']}", _auc(rows[k]["clean"])]
             for i, k in enumerate(ranking(rows, column, attack=True), 1)]
    return _table(["#", "key", f"AUC [{LEVEL:.0%} CI]", "n+/n-", "all vs none"], lines)


def cross_table(report: Mapping[str, Any]) -> list[str]:
    rows = report["keys"]
    groups = sorted({g for r in rows.values() for g in r["cross"]})
    keys = [k for k in rows if parts(k)[0] == "forget" and column_of(k) in MODALITIES]
    lines = []
    for k in sorted(keys, key=lambda k: (MODALITIES.index(column_of(k)), k)):
        cells = [_auc(rows[k]["cross"].get(g)) + (" (own)" if column_of(k) in g.split("+") else "") for g in groups]
        lines.append([f"`{k}`", *cells])
    return _table(["key", *(f"{g}-exposed vs none" for g in groups)], lines)


def control_lines(report: Mapping[str, Any], top: int = 10) -> list[str]:
    rows = report["keys"]
    ctrl = sorted((k for k in rows if not is_forget_key(k) and not is_attack_key(k)), key=lambda k: -abs(rows[k]["auc"] - 0.5))
    if not ctrl:
        return ["No control keys."]
    mid = sorted(abs(rows[k]["auc"] - 0.5) for k in ctrl)[len(ctrl) // 2]
    return [f"{len(ctrl)} keys of the other splits (retain, holdout, real faces, real world, utility); median "
            f"|AUC - 0.5| = {mid:.2f}. The {min(top, len(ctrl))} farthest from 0.5:", "",
            *_table(["key", "AUC"], [[f"`{k}`", _auc(rows[k])] for k in ctrl[:top]])]


def markdown(manifest: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    n = {lab: sum(1 for m in manifest["models"] if m["exposure"] == lab) for lab in ("all", "none")}
    out = [f"# Meta-evaluation (version {report['version']}, {manifest['forget']})", "",
           f"{len(manifest['models'])} pool models ({n['all']} saw every forget author's records, {n['none']} none of "
           f"them); reference gold: `{manifest['reference']['model']}`. AUC: how well a key's knowledge score "
           f"separates the models trained on the forget authors' records of the key's modality from those trained on "
           f"none ({LEVEL:.0%} bootstrap interval, {report['bootstrap']} resamples, seed {report['seed']}); 0.5: no "
           f"better than chance (docs/metaeval.md).", "", "## Pool", "", *pool_table(manifest), ""]
    for column in COLUMNS:
        out += [f"## Faithfulness and robustness: {column}", "", *modality_table(report, column), ""]
    if report["settings"]:
        out += ["## Attack scores as metrics", "", "Each attack's scores of a pool model (`{attack}:{setting}/...`: "
                "after the attack, the recovery `_delta`, `worst_case`, `max_delta`), judged like the evaluation's.", ""]
        for column in COLUMNS:
            out += [f"### {column}", "", *attack_table(report, column), ""]
    out += ["## Cross-modal: what the one-modality models show", "", *cross_table(report), "",
            "## Controls", "", *control_lines(report), "", "## Suggested leaderboard columns", "",
            f"Per modality, the forget-split key with the highest lower interval end among those keeping AUC >= "
            f"{ROBUST_ENOUGH} after every attack; ties to the key most specific to its modality (cross-modal AUC of "
            f"the other modalities' one-modality models closest to 0.5):", ""]
    out += [f"- {c}: `{k}`" if k else f"- {c}: none qualifies" for c, k in report["suggested"].items()]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- plot
def plot(report: Mapping[str, Any], path: Path) -> None:
    """One panel per modality column: the ``PLOT_KEYS`` most and least faithful evaluation keys, half each where there
    are more (bar: AUC, line: interval), with a marker per attack setting at the key's AUC after it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, settings = report["keys"], report["settings"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 11))
    markers = "os^vDP*X"
    for ax, column in zip(axes.flat, COLUMNS):
        ranked = ranking(rows, column)
        half = PLOT_KEYS // 2  # a pool where many keys tie at the top still shows the keys that fail
        keys = (ranked if len(ranked) <= PLOT_KEYS else ranked[:half] + ranked[-half:])[::-1]
        y = range(len(keys))
        aucs = [rows[k]["auc"] for k in keys]
        err = [[a - rows[k]["ci"][0] for a, k in zip(aucs, keys)], [rows[k]["ci"][1] - a for a, k in zip(aucs, keys)]]
        ax.barh(list(y), aucs, xerr=err, color="#9ecae1", ecolor="#3182bd", capsize=2, label="AUC (CI)")
        for j, s in enumerate(settings):
            pts = [(rows[k]["robustness"][s]["auc"], i) for i, k in enumerate(keys) if s in rows[k]["robustness"]]
            if pts:
                ax.scatter(*zip(*pts), marker=markers[j % len(markers)], s=22, zorder=3, label=f"after {s}")
        ax.axvline(0.5, color="grey", ls="--", lw=1)
        ax.set_yticks(list(y), [k.replace("/", " / ") for k in keys], fontsize=7)
        ax.set(xlim=(0, 1), xlabel="AUC: positives vs negatives", title=f"{column}: the most and least faithful keys")
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"Meta-evaluation v{report['version']} ({report['forget']})")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
