"""``clearbench run``: the whole study from one preset (generate -> pretrain -> finetune target and
golds -> unlearn every method x variant x forget modality -> evaluate all -> report).

Stages whose outputs exist with the same configuration are skipped; an interrupted study resumes
where it stopped when the same command is run again; a changed setting re-runs exactly the stages
downstream of it.

Replicates: ``--seeds 0 1 2`` (the same as ``study.seeds=[0,1,2]``) runs one complete study per seed
in OUT/seed-<s>/ (world.seed and every train.seed set to s) and writes OUT/report/ with every table
cell as mean ± sd over the seeds. Put key=value overrides before --seeds (it takes every number after it). ``--only-seed S`` runs
one replicate only (e.g. one process per seed, in parallel); rerun without it for the combined report.
"""
from __future__ import annotations

import argparse

from clearbench.config import BenchConfig, load_config
from clearbench.cluster_config import EXECUTORS


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run the whole study from a preset (resumable, skips up-to-date stages)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="preset under configs/ or a YAML path (default: tiny)")
    p.add_argument("--out", required=True, help="study directory, e.g. runs/tiny")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted overrides of any preset field")
    p.add_argument("--dry-run", action="store_true", help="list the stages and whether each would run or skip")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="replicate seeds, one full study each under OUT/seed-<s>/ (same as study.seeds=[...])")
    p.add_argument("--only-seed", type=int, metavar="SEED",
                   help="run only this replicate's stages (no combined report): start one process per seed to "
                        "run replicates in parallel, then the same command without it writes the combined report")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="run up to N independent stages at once (target and golds, unlearning runs, "
                        "evaluations), each in its own process with the CPU threads split between them; "
                        "their output goes to OUT/logs/ (default: 1, in order, in this process). With --executor: "
                        "jobs in flight at once (default: 1 for local, no limit for slurm)")
    p.add_argument("--executor", choices=EXECUTORS, default="builtin",
                   help="builtin (default): this process, or --jobs worker processes; slurm: every stage a Slurm job "
                        "with the resources of the preset's cluster section (docs/cluster.md), submitted once the "
                        "stages it needs are done, from this process, which must keep running; local: the same "
                        "with submitit's jobs on this machine")
    p.add_argument("--stage-store", metavar="DIR",
                   help="copy finished worlds, bases and finetunes to DIR, and copy them from there when another study "
                        "made them with the same settings and code, instead of training them again (default: "
                        "$CLEARBENCH_STAGE_STORE; none if unset)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clearbench.executor import run_study, state_of
    from clearbench.run import build_study
    from clearbench.stage_store import from_env

    overrides = list(args.overrides) + ([f"study.seeds=[{','.join(map(str, args.seeds))}]"] if args.seeds else [])
    cfg = load_config(BenchConfig, args.preset, overrides)
    store = from_env(args.stage_store)
    if args.dry_run:
        for i, stage in enumerate(build_study(cfg, Path(args.out))):
            state = state_of(stage)
            if state != "done" and store is not None and store.has(stage):
                state = "in the stage store"
            print(f"[{i + 1}] {stage.name:50s} {state}")
        return 0
    jobs = args.jobs if args.jobs is not None else 0 if args.executor == "slurm" else 1
    run_study(cfg, args.out, only_seed=args.only_seed, jobs=jobs, executor=args.executor, store=store)
    if args.only_seed is not None:
        print(f"replicate seed {args.only_seed} written to {args.out}/seed-{args.only_seed}")
        return 0
    page = "metaeval.md" if cfg.metaeval.enabled else "index.html"  # a meta-evaluation writes no HTML page
    print(f"study written to {args.out} (report: {args.out}/report/{page})")
    return 0
