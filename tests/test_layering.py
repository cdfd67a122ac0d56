"""The layers import downwards only (DESIGN.md, "Layering"), checked on every import statement, module level
and inside functions: the core never imports eval/ or baselines/; stages and unlearning may use baselines/
but not eval/; eval/ and baselines/ never import the study runner or the CLI, nor each other; and no module
reaches into another module's private names."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("clearbench", "eval", "baselines", "data_gen")
# the clearbench modules that wire eval/ and baselines/ in: the study runner (clearbench.run), the CLI and the
# quick-check script; every other clearbench module is core and imports neither (the planners included: they
# describe stages as data, and clearbench.run names the code that makes them)
WIRING = {"clearbench.run", "clearbench.cli", "clearbench.commands", "clearbench.quickcheck"}
MAY_USE_BASELINES = {"clearbench.stages", "clearbench.unlearn"}
# what eval/, baselines/ and data_gen/ must not import: the runner, the planners, the executor, the stages
UPPER = WIRING | MAY_USE_BASELINES | {"clearbench.study", "clearbench.plan", "clearbench.calibration",
                                     "clearbench.metaeval", "clearbench.executor", "clearbench.cluster", "clearbench.scenarios"}
# (importer, imported) pairs allowed for now, each with the reason; the lead removes them as branches merge
ALLOWED = {
}
ALLOWED_PRIVATE = {
    # TODO(lead, at merge of metrics): the replicate report shares the report page's CSS/JS/cell helpers
    ("eval.replicates", "eval.report_html"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement anywhere in ``source``; a
    ``from pkg import sub`` also counts as importing ``pkg.sub``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            out.append((base, names))
            out += [(f"{base}.{n}", []) for n in names]
    return out


def private_uses(source: str) -> list[tuple[str, str]]:
    """(module, private name) for ``from m import _x`` and for ``m._x`` where ``m`` was bound by an import."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(a.asname or a.name.split(".")[0]): (a.name if a.asname else a.name.split(".")[0])
                      for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append((node.module, a.name))
                bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            out.append((bound[node.value.id], node.attr))
    return out


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The layering rules broken by ``module`` (its source given)."""
    wiring = _within(module, WIRING)
    bad = []
    for imported, _ in imports_of(source, module, is_package):
        if any(m == module and _within(imported, (i,)) for m, i in ALLOWED) or not _within(imported, PACKAGES):
            continue
        if _within(module, MAY_USE_BASELINES) and _within(imported, ("eval",)):
            bad.append(f"{module} imports {imported} (stages and unlearning may use baselines, not eval)")
        elif module.startswith("clearbench") and not wiring and not _within(module, MAY_USE_BASELINES) \
                and _within(imported, ("eval", "baselines")):
            bad.append(f"core module {module} imports {imported}")
        elif _within(module, ("eval", "baselines", "data_gen")) and _within(imported, UPPER):
            bad.append(f"{module} imports {imported}, which is above it (the study runner / CLI)")
        elif (_within(module, ("eval",)) and _within(imported, ("baselines",))) or (
                _within(module, ("baselines",)) and _within(imported, ("eval",))):
            bad.append(f"{module} imports {imported}: eval and baselines are independent")
        elif _within(module, ("data_gen",)) and _within(imported, ("eval", "baselines")):
            bad.append(f"{module} imports {imported}: the generator needs no methods or metrics")
    for owner, name in private_uses(source):
        if _within(owner, PACKAGES) and owner != module and (module, owner) not in ALLOWED_PRIVATE:
            bad.append(f"{module} uses {owner}'s private {name}")
    return bad


def test_every_import_goes_down_the_layers():
    bad, seen = [], 0
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            seen += 1
            bad += violations(module_name(path), path.read_text(), path.name == "__init__.py")
    assert seen > 50
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions_and_private_reaches():
    lazy = "def f():\n    from eval.metrics import probability\n    return probability\n"
    assert violations("clearbench.train", lazy) == ["core module clearbench.train imports eval.metrics",
                                                    "core module clearbench.train imports eval.metrics.probability"]
    assert violations("clearbench.run", lazy) == []  # the study runner wires eval in
    assert violations("clearbench.study", lazy)[0] == "core module clearbench.study imports eval.metrics"  # a planner
    assert violations("clearbench.scenarios.restore", "from baselines import get_method\n") == [
        "core module clearbench.scenarios.restore imports baselines", "core module clearbench.scenarios.restore "
        "imports baselines.get_method"]
    assert violations("clearbench.unlearn", "import baselines.npo\n") == []
    assert violations("clearbench.stages", "from eval import outputs\n")[0].startswith("clearbench.stages imports eval")
    assert violations("eval.metrics.x", "from clearbench import stages\n") == [
        "eval.metrics.x imports clearbench.stages, which is above it (the study runner / CLI)"]
    assert violations("baselines.npo", "import eval.metrics\n")[0].endswith("eval and baselines are independent")
    assert violations("clearbench.unlearn", "from clearbench import stages\nstages._check_out(1)\n") == [
        "clearbench.unlearn uses clearbench.stages's private _check_out"]
    assert violations("clearbench.unlearn", "from clearbench.stages import _run_record\n") == [
        "clearbench.unlearn uses clearbench.stages's private _run_record"]
    assert violations("clearbench.stages", "import os\nos._exit(0)\n") == []  # only our packages count
    assert violations("clearbench.models.llava", "from . import common\n") == []
    assert imports_of("from . import common\n", "clearbench.models.llava") == [
        ("clearbench.models", ["common"]), ("clearbench.models.common", [])]
