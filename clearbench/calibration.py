"""Learning-rate calibration: the same sweep and the same written-down rule for every method.

The sweep: for every method of the study and every parameterisation (``calibration.parameterisations``: full
parameters, LoRA, ...), unlearn the study's first forget split and modality from the target at each lr of the
parameterisation's grid, and score each run (and the target) on validation records disjoint from the evaluation's
(``eval.validation``). The rule, fixed before any sweep ran:

    admissible = the lrs whose retain-validation probability is at least (1 - retain_tolerance) times the target's;
    chosen     = the admissible lr with the lowest forget-validation probability (ties: the smaller lr);
    no admissible lr: the smallest lr of the grid, flagged "no admissible lr".

The chosen lrs go into the presets by hand (``chosen_lrs.yaml`` is written to paste as each variant's
``lr_by_method``); ``calibration.json`` keeps every sweep point, ``calibration.png`` plots each method's
forget-vs-retain curve across lrs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from clearbench.config import BenchConfig, ConfigError, deep_merge, to_dict
from clearbench.plan import Stage, eval_config, stage_key, unlearn_stage
from clearbench.provenance import write_json_atomic, write_text_atomic

RULE = ("admissible: retain-validation probability >= (1 - {tol:g}) x the target's; chosen: the admissible lr "
        "with the lowest forget-validation probability (ties: the smaller lr); none admissible: the smallest lr")


def select_lr(points: Sequence[dict[str, float]], target_retain: float, tolerance: float) -> tuple[float, bool]:
    """The rule: ``points`` are {lr, forget, retain}; returns (lr, admissible)."""
    if not points:
        raise ValueError("no sweep points to choose from")
    ok = [p for p in points if p["retain"] >= (1.0 - tolerance) * target_retain]
    if not ok:
        return min(p["lr"] for p in points), False
    best = min(ok, key=lambda p: (round(p["forget"], 12), p["lr"]))
    return best["lr"], True


def lr_name(lr: float) -> str:
    return f"lr{lr:g}"


def sweep_stages(cfg: BenchConfig, out: Path, target: Stage) -> list[Stage]:
    """The validation of the target, an unlearning run and its validation per (parameterisation, method, lr),
    then the selection: every stage under ``out/calibrate``."""
    cal, study = cfg.calibration, cfg.study
    forget, modality = study.forget_splits[0], study.forget_modalities[0]
    root, world = out / "calibrate", out / "world"
    missing = [p for p in cal.parameterisations if p not in cal.lrs]
    if missing:
        raise ConfigError(f"calibration.lrs: no lr grid for parameterisation(s) {missing}; give each of "
                          f"{sorted(cal.parameterisations)} a grid (at least two lrs)")
    val_cfg = {"forget": forget, "forget_modality": modality, "eval_cfg": eval_config(study, forget),
               "n_per_cell": cal.n_per_cell}
    stages = [_validate_stage(root, "target", target, world, val_cfg)]
    points: list[dict[str, Any]] = []
    for param, overrides in cal.parameterisations.items():
        for method in study.methods:
            for lr in cal.lrs[param]:
                name = f"{method}-{param}-{lr_name(lr)}"
                section = deep_merge(to_dict(cfg.unlearn), overrides) | {
                    "method": method, "forget": forget, "forget_modality": modality}
                section["lr_by_method"] = {**section.get("lr_by_method", {}), method: lr}
                run = unlearn_stage(cfg, world, root / "runs" / name, f"calibrate/unlearn/{name}", section, target)
                stages += [run, _validate_stage(root, name, run, world, val_cfg)]
                points.append({"method": method, "parameterisation": param, "lr": lr,
                               "file": str(root / "validation" / name / VALIDATION_FILE)})
    checks = [s for s in stages if s.kind == "validate"]
    stages.append(Stage("calibrate/select", "calibrate_select", root / "report",
                        stage_key("calibrate_select", cal, *[s.key for s in checks]),
                        {"points": points, "target": str(root / "validation" / "target" / VALIDATION_FILE),
                         "tolerance": cal.retain_tolerance, "out_dir": root / "report"},
                        tuple(s.name for s in checks)))
    return stages


VALIDATION_FILE = "validation.json"


def _validate_stage(root: Path, name: str, model: Stage, world: Path, val_cfg: dict[str, Any]) -> Stage:
    path = root / "validation" / name
    key = stage_key("validate", {k: to_dict(v) if k == "eval_cfg" else v for k, v in val_cfg.items()}, model.key)
    return Stage(f"calibrate/validate/{name}", "validate", path, key,
                 {"model": model.path, "world": world, "out_dir": path, "spec": val_cfg}, ("world", model.name))


def select_stage(points: list[dict[str, Any]], target: str, tolerance: float, out_dir: Path, resume: bool) -> None:
    """Apply the rule to every (method, parameterisation) and write the sweep, the choice and the plot."""
    base = json.loads(Path(target).read_text())
    rows = [p | {k: json.loads(Path(p["file"]).read_text())[k] for k in ("forget", "retain")} for p in points]
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for param in sorted({r["parameterisation"] for r in rows}):
        for method in sorted({r["method"] for r in rows}):
            mine = [r for r in rows if r["parameterisation"] == param and r["method"] == method]
            lr, ok = select_lr(mine, base["retain"], tolerance)
            chosen.setdefault(param, {})[method] = {"lr": lr, "admissible": ok}
    out_dir = Path(out_dir)
    report = {"rule": RULE.format(tol=tolerance), "retain_tolerance": tolerance, "target": {k: base[k] for k in ("forget", "retain")},
              "points": [{k: v for k, v in r.items() if k != "file"} for r in rows], "chosen": chosen}
    write_json_atomic(out_dir / "calibration.json", report)
    write_text_atomic(out_dir / "chosen_lrs.yaml", _yaml(chosen))
    write_text_atomic(out_dir / "calibration.md", _markdown(report))
    plot_sweep(report, out_dir / "calibration.png")


def _yaml(chosen: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["# lr_by_method per parameterisation, chosen by clearbench.calibration's rule (paste into the variants)"]
    for param, methods in chosen.items():
        lines.append(f"{param}:")
        lines += [f"  {m}: {c['lr']:g}" + ("" if c["admissible"] else "  # no admissible lr") for m, c in methods.items()]
    return "\n".join(lines) + "\n"


def _markdown(report: dict[str, Any]) -> str:
    t = report["target"]
    lines = [f"Rule: {report['rule']}.", "", f"Target: forget {t['forget']:.3f}, retain {t['retain']:.3f}.", "",
             "| parameterisation | method | lr | forget-val prob | retain-val prob | chosen |", "|---|---|---|---|---|---|"]
    for p in sorted(report["points"], key=lambda p: (p["parameterisation"], p["method"], p["lr"])):
        c = report["chosen"][p["parameterisation"]][p["method"]]
        mark = ("**chosen**" if c["admissible"] else "chosen (none admissible)") if c["lr"] == p["lr"] else ""
        lines.append(f"| {p['parameterisation']} | {p['method']} | {p['lr']:g} | {p['forget']:.3f} | "
                     f"{p['retain']:.3f} | {mark} |")
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """One panel per parameterisation: each method's (retain, forget) validation probability across its lrs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = sorted({p["parameterisation"] for p in report["points"]})
    fig, axes = plt.subplots(1, len(params), figsize=(6.5 * len(params), 5.5), squeeze=False)
    t = report["target"]
    for ax, param in zip(axes[0], params):
        methods = sorted({p["method"] for p in report["points"] if p["parameterisation"] == param})
        for i, method in enumerate(methods):
            pts = sorted((p for p in report["points"] if p["parameterisation"] == param and p["method"] == method),
                         key=lambda p: p["lr"])
            line, = ax.plot([p["retain"] for p in pts], [p["forget"] for p in pts], marker="o", ms=3,
                            color=plt.cm.tab20(i % 20), label=method)
            pick = report["chosen"][param][method]["lr"]
            ax.plot(*next((p["retain"], p["forget"]) for p in pts if p["lr"] == pick), marker="*", ms=12,
                    color=line.get_color())
        ax.plot(t["retain"], t["forget"], marker="s", color="black", ms=8, label="target")
        ax.axvline(t["retain"] * (1 - report["retain_tolerance"]), color="grey", ls="--", lw=1)
        ax.set(title=f"{param}: lr sweep (star: chosen; dashed: retain bound)", xlabel="retain-validation Prob. ↑",
               ylabel="forget-validation Prob. ↓")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

