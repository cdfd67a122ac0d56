"""``clearbench list methods|presets|metrics|attacks``: what can be named on the command line and in presets.

Each line: the name, then what it is (the first line of its docstring or preset comment). Plugin methods are not
listed: any importable module with the method contract is one (``--method my_pkg.my_method``, docs/submitting.md).
"""
from __future__ import annotations

import argparse
import inspect

KINDS = ("methods", "presets", "metrics", "attacks")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list the unlearning methods, presets, metrics or attacks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="what to list: methods, presets, metrics or attacks")
    p.set_defaults(func=run)


WIDTH = 110  # characters of description per line


def _short(text: str) -> str:
    """A paragraph on one line, cut at WIDTH."""
    text = " ".join(text.split())
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def _first_line(module) -> str:
    return _short((inspect.getdoc(module) or "").split("\n\n")[0])


def methods() -> list[tuple[str, str]]:
    from baselines import METHODS

    return [(name, _first_line(module)) for name, module in METHODS.items()]


def presets() -> list[tuple[str, str]]:
    from clearbench.config import PRESET_DIR

    out = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        lines = path.read_text().splitlines()
        comment = [line.lstrip("#").strip() for line in lines[:next((i for i, l in enumerate(lines)
                                                                     if not l.startswith("#")), len(lines))]]
        out.append((path.stem, _short(" ".join(comment))))
    return out


def metrics() -> list[tuple[str, str]]:
    from eval.metrics import METRICS

    out = []
    for family, module in METRICS.items():
        for o in (o for spec in module.SPECS for o in spec.outputs):
            forget = f" (forget {o.arrow('forget')})" if o.forget_better else ""
            out.append((f"{o.name} {o.arrow()}{forget}".strip(), _short(f"{family} v{module.VERSION}: {o.doc}")))
    return out


def attacks() -> list[tuple[str, str]]:
    from eval.attacks import ATTACKS

    return [(name, _first_line(module)) for name, module in ATTACKS.items()]


def run(args: argparse.Namespace) -> int:
    rows = {"methods": methods, "presets": presets, "metrics": metrics, "attacks": attacks}[args.kind]()
    width = max(len(name) for name, _ in rows)
    for name, what in rows:
        print(f"{name:{width}s}  {what}")
    if args.kind == "methods":
        print(f"{'':{width}s}  (and any plugin module by its dotted path, e.g. --method my_pkg.my_method)")
    return 0
