"""The report's sections beyond the per-setting tables: attacks (issue 16 item 6) and cross-modal leakage
(item 5), as tables of the same kind (``eval.report_columns.Grid``).

Attacks: ``build_report(..., attacks={run: [attack result files]})`` (run = the evaluation result's file
stem, ``npo-text-10``; ``clearbench run`` writes them under ``OUT/attacks/<run>/<attack>.json``). Each file
is checked by ``eval.attacks.validate_result`` (every aggregate recomputed from its per-example values) and
must be of the same model, world and forget split as its row's result; a file that fails is a rejected file.
Each row then gains, under attack result keys: ``standard/all/{metric}`` (its probes unattacked),
``worst_case/all/{metric}`` (per probe the most recovered value over the standard probes and every attack,
``eval.attacks.result.worst_case``) and ``{attack}/all/{metric}_delta`` (that attack's largest recovery).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from eval import crossmodal
from eval.attacks import ATTACKS, validate_result
from eval.attacks.result import recompute as recompute_attack
from eval.attacks.result import worst_case
from eval.report_columns import ATTACK_METRICS, Column, Grid, Shown, Table, fill
from eval.verify import read_json

# --------------------------------------------------------------------------- loading attack results
def _problems(result: Any, row: Any) -> list[str]:
    problems = validate_result(result)
    if problems or row is None:
        return problems or ["no accepted evaluation result of this run in the report to attach it to"]
    mine, theirs = result.get("provenance") or {}, row.provenance
    return [f"{k} {str(mine.get(k))[:16]!r} differs from its run's evaluation result ({str(theirs.get(k))[:16]!r})"
            for k in ("model_fingerprint", "world_fingerprint", "forget_split") if mine.get(k) != theirs.get(k)]


def attach_attacks(attacks: Mapping[str, Sequence[str | Path]], rows: Sequence[Any]) -> list[Any]:
    """Check every attack file and add its recomputed numbers to its row (module docstring); returns the
    rejected files as (path, reasons). Files are read with the result files' size and depth limits."""
    by_run = {Path(r.path).stem: r for r in rows}
    rejected = []
    for run, files in attacks.items():
        accepted = []
        for path in files:
            try:
                result = read_json(path)[0]
            except (OSError, UnicodeDecodeError, ValueError) as e:
                result, problems = None, [f"cannot be read as a JSON attack result: {' '.join(str(e).split())}"]
            try:
                problems = problems if result is None else _problems(result, by_run.get(run))
            except Exception as e:  # a malformed file is rejected, it never stops the report
                problems = [f"cannot be validated: {type(e).__name__}: {e}"]
            if problems:
                rejected.append((str(path), problems))
            else:
                accepted.append(result)
        if accepted:
            _add(by_run[run], accepted)
    return rejected


def _add(row: Any, results: list[dict[str, Any]]) -> None:
    """Row keys from accepted attack results of one model (recomputed, never copied) and each attack's settings."""
    results = sorted(results, key=lambda r: list(ATTACKS).index(r["attack"]) if r["attack"] in ATTACKS else len(ATTACKS))
    first = recompute_attack(results[0])["metrics"]
    row.metrics |= {k: v for k, v in first.items() if k.startswith("standard/")}
    row.metrics |= worst_case(results)
    for result in results:
        recomputed = recompute_attack(result)
        fresh, curves = recomputed["metrics"], recomputed["curves"]
        name = result["attack"]
        row.metrics |= {f"{name}/{k.split('/', 1)[1]}_delta": v for k, v in fresh.items() if k.startswith("max_delta/")}
        row.attacks[name] = {s["name"]: {**{m: fresh.get(f"{s['name']}/all/{m}_delta") for m, _ in ATTACK_METRICS},
                                         "in_sample": bool(s.get("in_sample")), "skipped": s.get("skipped") or "",
                                         "curve": [(p["step"], p["metrics"]["all/probability"])
                                                   for p in curves.get(s["name"], []) if "all/probability" in p["metrics"]]}
                             for s in result["settings"]}


def has_attacks(rows: Sequence[Any]) -> bool:
    return any(r.attacks for r in rows)


# --------------------------------------------------------------------------- tables of the attacks section
def _setting_cell(metric: str):
    def cell(row: Any, col: Column) -> Shown | None:
        attack, setting = col.key.split("/", 1)
        value = row.attacks.get(attack, {}).get(setting, {}).get(metric)
        if value is None:
            return None
        text = f"{value:+.4f}"
        return Shown("0.0000" if float(text) == 0.0 else text, repr(value))
    return cell


def _setting_reason(row: Any, k: str) -> str:
    attack, setting = k.split("/", 1)
    if attack not in row.attacks:
        return f"no {attack} result for this model"
    found = row.attacks[attack].get(setting)
    return f"skipped: {found['skipped']}" if found and found["skipped"] else f"{attack} did not run {setting}"


def attack_detail_grids(rows: Sequence[Any], label) -> list[Grid]:
    """One table per attack: its settings' recovery Δ of the pooled forget probability, one row per model
    (``label(row)``: its label with its forget setting)."""
    grids = []
    for name in ATTACKS:
        names = list(dict.fromkeys(s for r in rows for s in r.attacks.get(name, {})))
        members = [r for r in rows if name in r.attacks]
        if not members:
            continue
        in_sample = {s for r in members for s, v in r.attacks[name].items() if v["in_sample"]}
        cols = tuple(Column(f"{s}{' (in-sample)' if s in in_sample else ''}", f"{name}/{s}",
                            f"{name} setting {s}: forget probability after − before on its probes (pooled over "
                            f"modalities); positive = knowledge recovered" + (
                                "; in-sample: relearned these very records (relearnability, not in the worst case)"
                                if s in in_sample else "")) for s in names)
        table = Table(f"attack-{name}", f"{name}: recovery Δ forget probability per setting",
                      "one row per model; the attack's settings as columns (docs/attacks.md)", cols)
        grids.append(fill(table, [("", label(r), r) for r in members], _setting_cell("probability"), _setting_reason))
    return grids


# --------------------------------------------------------------------------- cross-modal leakage
def has_all_settings(rows: Sequence[Any]) -> bool:
    return all(any(r.setting == s for r in rows) for s in crossmodal.SETTINGS)


def _matrix_table(metric: str, title: str) -> Table:
    scored = ("image",) if metric.startswith("naming") else crossmodal.EVALUATED  # naming records are image-only
    cols = tuple(Column(f"{s} → {m}", f"{s}/{m}", f"unlearned on {s} (its forget setting), scored on {m} forget "
                        f"records: forget/{m}/{metric}") for s in crossmodal.SETTINGS for m in scored)
    return Table(f"matrix-{metric}", f"{title}: forget setting → evaluated modality",
                 "rows: methods; columns: the modality unlearned → the modality scored (CLEAR §5.3's matrix)", cols)


def crossmodal_grids(rows: Sequence[Any]) -> list[Grid]:
    """The 3 x 3 matrices (one table per metric), the leak rates and the Spearman correlations."""
    grids = []
    methods = list(dict.fromkeys(r.label for r in rows if r.setting is not None))
    for metric, title in crossmodal.MATRIX_METRICS:
        mat = crossmodal.matrix(rows, metric)

        def cell(label: str, col: Column, mat=mat, metric=metric) -> Shown | None:
            s, m = col.key.split("/")
            v = mat.get(label, {}).get(s, {}).get(m)
            return None if v is None else Shown(f"{v:.4f}", repr(v))

        def reason(label: str, k: str, mat=mat, metric=metric) -> str:
            s, m = k.split("/")
            return (f"{label} was not run with {s} forgetting" if s not in mat.get(label, {})
                    else f"no forget/{m}/{metric} in its result")
        grids.append(fill(_matrix_table(metric, title), [("", m, m) for m in methods], cell, reason))
    grids.append(_leak_grid(rows, methods))
    grids.append(_spearman_grid(rows))
    return grids


def _leak_grid(rows: Sequence[Any], methods: list[str]) -> Grid:
    cols = tuple(Column(f"leak rate, {s} forgetting", s, f"of the author x facts forgotten in a modality {s} "
                        f"forgetting unlearned (probability at most the gold's x {1 + crossmodal.MARGIN:g}), the share "
                        f"still known in a modality it did not unlearn" + (" (multimodal: in any other modality)"
                                                                          if s == "multimodal" else "")
                        + "; n = facts forgotten (docs/metrics.md, cross-modal leakage)") for s in crossmodal.SETTINGS)
    by = {(r.label, r.setting): r for r in rows if r.setting is not None}

    def cell(label: str, col: Column) -> Shown | None:
        row = by.get((label, col.key))
        if row is None or row.leaks is None:
            return None
        rate, n = crossmodal.leak_rate(row.leaks, setting=col.key)
        return None if rate is None else Shown(f"{rate:.3f}", repr(rate), f"n={n}")

    def reason(label: str, k: str) -> str:
        row = by.get((label, k))
        if row is None:
            return f"not run with {k} forgetting"
        return "no gold examples in the result" if row.leaks is None else \
            "no fact forgotten in an unlearned modality that is also scored in another modality"
    table = Table("leak", "cross-modal leak rate", "facts forgotten where the model was unlearned but still known "
                  "in another modality", cols)
    return fill(table, [("", m, m) for m in methods], cell, reason)


CLEAR_RHO = {("text", "multimodal"): "0.7", ("visual", "multimodal"): "0.2"}  # CLEAR §5.3
RHO_KEYS: tuple[tuple[str, str], ...] = (("forget/all/forget_quality_d", "FQ D"), ("clear/all/forget", "CLEAR Forget"),
                                         ("forget/all/probability", "forget Prob"))


def _spearman_grid(rows: Sequence[Any]) -> Grid:
    rhos = {k: crossmodal.spearman(rows, k) for k, _ in RHO_KEYS}
    cols = tuple(Column(f"ρ {h}", k, f"Spearman correlation of the methods' {k} between the two settings; "
                        "n = methods in both") for k, h in RHO_KEYS)
    cols += (Column("CLEAR ρ", "clear", "CLEAR's reported correlation of method rankings (§5.3)"),)

    def cell(pair: tuple[str, str], col: Column) -> Shown | None:
        if col.key == "clear":
            return Shown(CLEAR_RHO.get(pair, "not reported"), CLEAR_RHO.get(pair, ""))
        rho, n = rhos[col.key][pair]
        return None if rho is None else Shown(f"{rho:+.2f}", repr(rho), f"n={n}")

    def reason(pair: tuple[str, str], k: str) -> str:
        return f"fewer than 3 methods in both settings, or one setting ranks them all equal ({k})"
    table = Table("spearman", "rank correlation between forget settings",
                  "do the methods rank alike whichever modality they unlearn?", cols, "settings")
    return fill(table, [("", f"{a} vs {b}", (a, b)) for a, b in rhos[RHO_KEYS[0][0]]], cell, reason)
