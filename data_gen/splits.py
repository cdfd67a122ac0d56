"""Forget / retain / holdout splits (TOFU and CLEAR naming from clearbench.types: forget01 = 1 % of authors, ...).

forget sets are nested prefixes of one seeded shuffle, so forget01 ⊂ forget05 ⊂ forget10; retainYY
is the complement of forgetXX (YY = 100 - XX); holdoutXX are nested prefixes of the holdout
authors (same sizes as forgetXX); retain_perturbed is a fixed sample of authors outside the largest
forget set.
"""
from __future__ import annotations

import math

from clearbench.types import forget_split, holdout_split, retain_split
from data_gen.authors import sub_rng


def check_percents(percents, n_authors: int) -> tuple[int, ...]:
    """Validated, sorted forget percentages; each must give a whole, positive number of authors."""
    if not percents:
        raise ValueError("--forget-percents is empty; give at least one percentage, e.g. --forget-percents 1,5,10")
    out = []
    for p in percents:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 99:
            raise ValueError(f"forget percentage {p!r} is not an integer between 1 and 99; use e.g. --forget-percents 1,5,10")
        if n_authors * p % 100:
            step = 100 // math.gcd(p, 100)
            raise ValueError(
                f"forget percentage {p} % of {n_authors} authors is {n_authors * p / 100:g} authors, not a whole number; "
                f"use a number of authors that is a multiple of {step} (e.g. --authors {max(step, n_authors // step * step or step)}) "
                f"or drop {p} from --forget-percents")
        out.append(p)
    if len(set(out)) != len(out):
        raise ValueError(f"--forget-percents {','.join(map(str, percents))} repeats a percentage; list each once")
    return tuple(sorted(out))


def make_splits(seed: int, author_ids: list[str], holdout_ids: list[str], percents: tuple[int, ...], retain_eval: int) -> dict[str, list[str]]:
    """Split name -> sorted author ids, for every forget/retain/holdout split and retain_perturbed."""
    n = len(author_ids)
    order = list(author_ids)
    sub_rng(seed, "splits").shuffle(order)
    largest = max(percents) * n // 100
    if len(holdout_ids) < largest:
        raise ValueError(f"{len(holdout_ids)} holdout authors cannot cover the largest forget split ({largest} authors); "
                         f"use at least {largest} holdout authors")
    splits: dict[str, list[str]] = {}
    for p in percents:
        k = p * n // 100
        forget, name = set(order[:k]), forget_split(p)
        splits[name] = sorted(forget)
        splits[retain_split(name)] = sorted(a for a in author_ids if a not in forget)
        splits[holdout_split(name)] = sorted(holdout_ids[:k])
    outside = sorted(order[largest:])
    splits["retain_perturbed"] = sorted(sub_rng(seed, "retain_eval").sample(outside, min(retain_eval, len(outside))))
    return splits
