"""eval.claims: Kendall's W by hand, Spearman against CLEAR's table, and each claim rule on handmade values."""
import math

import pytest

from eval import claims


def test_kendalls_w_by_hand():
    # 3 seeds rank 4 methods (lower score = rank 1); the mean rank sum is m (n + 1) / 2 = 7.5
    scores = [[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4]]
    ranks = [[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4]]
    sums = [sum(r[i] for r in ranks) for i in range(4)]
    assert sums == [4, 6, 8, 12]
    s = sum((x - 7.5) ** 2 for x in sums)
    assert claims.kendalls_w(scores) == pytest.approx(12 * s / (9 * (64 - 4)))
    assert claims.kendalls_w([[1, 2, 3], [1, 2, 3]]) == pytest.approx(1.0)
    assert claims.kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)


def test_kendalls_w_tie_correction():
    # two raters, one with a tie: ranks (1.5, 1.5, 3) and (1, 2, 3); T = 2^3 - 2 = 6
    sums = [2.5, 3.5, 6.0]
    s = sum((x - 4.0) ** 2 for x in sums)
    assert claims.kendalls_w([[1, 1, 2], [1, 2, 3]]) == pytest.approx(12 * s / (4 * 24 - 2 * 6))
    with pytest.raises(ValueError):
        claims.kendalls_w([[1, 2, 3]])


def test_spearman_against_clear_forget_column():
    clear_forget = {m: v[2] for m, v in claims.CLEAR_TABLE1.items()}
    rho, n = claims.spearman(clear_forget, clear_forget)
    assert (rho, n) == (pytest.approx(1.0), 6)
    assert math.isnan(claims.spearman({"dpo": 1.0}, clear_forget)[0])


def _seed(ga_retain, scrub_forget, l1_retain=0.5):
    t = {claims.REAL: 0.8, claims.RETAIN: 0.8, claims.FORGET: 0.8}
    return {
        "target-10": t,
        "grad_ascent-multimodal-10": {claims.REAL: 0.3, claims.RETAIN: ga_retain, claims.FORGET: 0.0},
        "scrub-multimodal-10": {claims.REAL: 0.8, claims.RETAIN: 0.79, claims.FORGET: scrub_forget},
        "grad_ascent-lora-multimodal-10": {claims.RETAIN: 0.1},
        "grad_ascent-lora-l1-multimodal-10": {claims.RETAIN: l1_retain},
        "grad_ascent-text-10": {claims.FORGET: 0.5},
        "grad_ascent-visual-10": {claims.FORGET: 0.4},
    }


def test_claim_rules_count_the_seeds_where_they_hold():
    verdicts = {v.claim: v for v in claims.evaluate_claims({0: _seed(0.0, 0.7), 1: _seed(0.5, 0.3), 2: _seed(0.1, 0.75)})}
    ga = verdicts["GA destroys retain and real (CLEAR Table 1: .27/.00/.00)"]
    assert (ga.held, ga.seeds) == (2, 3)  # retain/target 0, 0.625, 0.125
    scrub = verdicts["SCRUB keeps retain but barely forgets"]
    assert (scrub.held, scrub.seeds) == (2, 3)  # forget/target 0.875, 0.375, 0.94
    assert verdicts["RMU destroys retain and real (CLEAR Table 1: .24/.00/.00)"].seeds == 0  # no rmu runs
    assert verdicts["Forgetting both modalities beats one"].held == 3  # 0.0 < min(0.5, 0.4)
    l1 = verdicts["L1 on LoRA prevents GA's collapse (CLEAR v1: .32/.00/.00 -> .49/.50/.37)"]
    assert (l1.held, l1.seeds) == (3, 3)
    assert "retain/target 0.25 ± 0.33" in ga.evidence  # mean and sd of 0, 0.625, 0.125


def test_ranking_agreement_uses_runs_every_seed_has():
    per_seed = {s: {"a-multimodal-10": {"k": 1.0 + s}, "b-multimodal-10": {"k": 5.0}, "c-multimodal-10": {"k": 9.0},
                    "target-10": {"k": 0.0}} for s in range(3)}
    per_seed[2]["d-multimodal-10"] = {"k": 0.5}
    w, n = claims.ranking_agreement(per_seed, "k")
    assert (w, n) == (pytest.approx(1.0), 3)


def test_a_study_directory_gives_per_seed_values_and_the_markdown(tmp_path):
    import json

    def write(d, run, metrics):
        (d / "results").mkdir(parents=True, exist_ok=True)
        (d / "results" / f"{run}.json").write_text(json.dumps({"aggregates": {"metrics": metrics}}))

    for seed, (a, b) in enumerate([(0.1, 0.3), (0.2, 0.4)]):
        d = tmp_path / f"seed-{seed}"
        write(d, "target-10", {claims.RANK_KEY: 0.5, claims.HEADLINE: 1e-9})
        write(d, "npo-multimodal-10", {claims.RANK_KEY: a, claims.HEADLINE: 0.2})
        write(d, "npo-lora-multimodal-10", {claims.RANK_KEY: b, claims.HEADLINE: 1e-9})
    (tmp_path / "seed-1" / "results" / "npo-multimodal-10.verified.json").write_text("{}")
    per_seed = claims.study_values(tmp_path)
    assert sorted(per_seed) == [0, 1] and sorted(per_seed[1]) == ["npo-lora-multimodal-10", "npo-multimodal-10",
                                                                 "target-10"]
    assert claims.distinct_headlines(per_seed[0]) == (2, 1)  # 0.2 and 1e-9; the LoRA run ties the target
    text = claims.claims_markdown(per_seed)
    assert "variant '': not defined" in text  # one run per variant: W needs two
    assert "all variants: W = 1.000 over 2 runs" in text
    assert text.index("| npo-multimodal-10 | 0.100") < text.index("| npo-lora-multimodal-10 | 0.300")
    with pytest.raises(FileNotFoundError, match="not a clearbench run directory"):
        claims.study_values(tmp_path / "nothing")
