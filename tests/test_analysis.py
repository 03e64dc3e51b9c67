"""probe analyze: intervals, the decomposition and the claim checks on hand-made accuracy tables with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_STUDY
from scipy import stats

from probe.analysis.accuracies import accuracy_dataset, build_dataset
from probe.analysis.claims import FAILS, HOLDS, UNDECIDED, check_claims
from probe.analysis.decomposition import decompose, direction_rows, split_contrast, summarize, summary_rows
from probe.analysis.reference import reference_relative
from probe.analysis.stats import estimate, paired, welch
from probe.planning.plan import Study, make_plan
from probe.specs.spec import ArchSpec, DataSpec
from probe.specs.variants import Variant

CLASSES = [f"class{i}" for i in range(10)]


def _specs(seeds=(0, 1, 2), splits=("random",), cuts=None):
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}), splits=splits,
                  seeds=seeds, cuts=cuts)
    return [p.spec for p in make_plan(study, CLASSES, 3, 16)]


def paper_like(spec, noise=0.0, rng=None):
    """Accuracies shaped like the paper's: a co-adaptation dip at n = 3-5, specialization growing with n, a
    lingering boost, random layers collapsing, and a dissimilar split losing twice as much."""
    n = spec.cut
    jitter = rng.normal(scale=noise) if rng is not None else 0.0
    base = 0.80 + jitter
    if spec.variant == "base":
        return base
    dip = {3: 0.03, 4: 0.05, 5: 0.03}.get(n, 0.0)
    special = 0.03 * n * (2 if spec.split != "random" else 1)
    label = Variant.of(spec).name
    return base + {"BnB": -dip, "BnB+": 0.0, "AnB": -dip - special, "AnB+": 0.02, "RnB": -0.1 * n}[label]


def _dataset(specs, fn):
    return build_dataset(specs, {s.id: fn(s) for s in specs})


def test_estimate_matches_the_t_interval():
    e = estimate([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert e.mean == pytest.approx(2.0) and e.replicates == 3
    assert (e.low, e.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert e.p == pytest.approx(stats.ttest_1samp([1, 2, 3], 0).pvalue)
    assert estimate([1.0, np.nan, 3.0]).replicates == 2


def test_one_replicate_gives_no_interval():
    e = estimate([0.7])
    assert e.mean == 0.7 and e.replicates == 1 and np.isnan(e.low) and np.isnan(e.high)
    assert not e.has_interval and not e.above() and not e.below() and "no interval" in str(e)
    assert estimate([]).replicates == 0 and str(estimate([])) == "no data"


def test_paired_and_welch_agree_with_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 8), rng.normal(0, 1, 8)
    assert paired(a, b).p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired(a, b).mean == pytest.approx(np.mean(a - b))
    w = welch(a, b[:5])
    assert w.p == pytest.approx(stats.ttest_ind(a, b[:5], equal_var=False).pvalue)
    assert w.replicates == 13 and w.low < w.mean < w.high
    with pytest.raises(ValueError, match="shape"):
        paired(a, b[:3])


def test_decomposition_recovers_known_drops():
    specs = _specs()
    ds = _dataset(specs, paper_like)
    dec = decompose(ds)
    co = summarize(dec["coadaptation"])
    sp = summarize(dec["specialization"])
    for n in range(1, 8):
        assert co[("random", n)].mean == pytest.approx({3: 0.03, 4: 0.05, 5: 0.03}.get(n, 0.0))
        assert sp[("random", n)].mean == pytest.approx(0.03 * n)
        assert co[("random", n)].replicates == 3  # 3 seeds, each the mean of its 2 directions
        assert summarize(dec["coadaptation"], pooled=True)[("random", n)].replicates == 6  # seeds x directions
    total = summarize(dec["total"])
    assert total[("random", 4)].mean == pytest.approx(0.05 + 0.12)
    assert summarize(dec["lingering"])[("random", 2)].mean == pytest.approx(0.02)
    assert summarize(dec["random_drop"])[("random", 3)].mean == pytest.approx(0.3)


def test_missing_networks_are_nan_and_counted_out():
    specs = _specs()
    acc = {s.id: paper_like(s) for s in specs}
    dropped = [s for s in specs if s.name == "A4B" and s.split_seed == 0][0]
    del acc[dropped.id]
    ds = build_dataset(specs, acc)
    assert np.isnan(ds["acc"].sel(split="random", replicate="s0/init0", target="B", n=4, variant="AnB"))
    # seed 0 lost its A->B direction at n = 4: its B->A direction alone is its value there, one pooled value less
    spec4 = summarize(decompose(ds)["specialization"])[("random", 4)]
    assert spec4.replicates == 3 and spec4.mean == pytest.approx(0.12)
    assert summarize(decompose(ds)["specialization"], pooled=True)[("random", 4)].replicates == 5
    assert summarize(decompose(ds)["coadaptation"])[("random", 4)].replicates == 3


def test_claims_hold_on_the_papers_pattern():
    rng = np.random.default_rng(1)
    ds = _dataset(_specs(), lambda s: paper_like(s, noise=0.002, rng=rng))
    verdicts = {c.number: c.verdict for c in check_claims(ds)}
    assert verdicts[2] == HOLDS  # the dip at n = 4 and the recovery at the top
    assert verdicts[4] == HOLDS  # AnB - BnB = -0.03 n
    assert verdicts[5] == HOLDS
    assert verdicts[6] == HOLDS  # +0.02 boost
    assert verdicts[8] == HOLDS  # random layers far below transferred ones
    assert verdicts[3] == HOLDS  # BnB+ = baseB, with tight intervals
    assert verdicts[1] == FAILS  # this table's AnB is 0.03 below base already at n = 1
    assert verdicts[7] == UNDECIDED  # no dissimilar split in this table


def test_claim_that_must_not_hold():
    rng = np.random.default_rng(2)

    def broken(s):
        v = paper_like(s, noise=0.002, rng=rng)
        if Variant.of(s).name == "BnB+":
            v -= 0.05  # fine-tuned selffers clearly worse than base: claim 3 fails
        if Variant.of(s).name == "RnB":
            v = 0.95  # random frozen layers beat transferred ones: claim 8 fails
        return v

    verdicts = {c.number: c for c in check_claims(_dataset(_specs(), broken))}
    assert verdicts[3].verdict == FAILS and "BnB+ - baseB" in verdicts[3].evidence[0]
    assert verdicts[8].verdict == FAILS


def test_wide_intervals_do_not_show_equivalence():
    rng = np.random.default_rng(4)
    ds = _dataset(_specs(seeds=(0,)), lambda s: paper_like(s) + rng.normal(scale=0.05))
    claims = {c.number: c for c in check_claims(ds)}
    assert claims[3].verdict == UNDECIDED, claims[3].evidence  # BnB+ = base up to noise, but too noisy to show


def test_one_replicate_leaves_every_claim_undecided():
    specs = [s for s in _specs(seeds=(0,)) if s.target == "B"]
    ds = _dataset(specs, paper_like)
    assert ds.sizes["replicate"] == 1
    claims = check_claims(ds)
    assert {c.verdict for c in claims} == {UNDECIDED}
    assert any("no interval" in e for e in claims[1].evidence)


def test_dissimilar_split_contrast(split_file):
    dissimilar = split_file({"A": CLASSES[:4], "B": CLASSES[4:]})
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}),
                  splits=("random", dissimilar), seeds=(0, 1, 2))
    specs = [p.spec for p in make_plan(study, CLASSES, 3, 16)]
    rng = np.random.default_rng(3)
    ds = _dataset(specs, lambda s: paper_like(s, noise=0.002, rng=rng))
    contrast = split_contrast(ds)
    # the dissimilar split's extra specialization drop, 0.03 n, on the relative scale (divided by base 0.8)
    assert contrast[(dissimilar, 6)].mean == pytest.approx(0.18 / 0.8, abs=0.01)
    assert contrast[(dissimilar, 6)].replicates == 6  # 3 seeds of each split
    assert split_contrast(ds, pooled=True)[(dissimilar, 6)].replicates == 12
    claim7 = {c.number: c for c in check_claims(ds)}[7]
    assert claim7.verdict == HOLDS and "(3 and 3 seeds; n below counts both)" in claim7.evidence[0]


def test_reference_matches_the_papers_means():
    ref = reference_relative()
    assert ref["AnB"][7].mean() == pytest.approx(0.542 / 0.625, abs=0.01)
    assert ref["RnB"][3].mean() < 0.01
    assert len(ref["AnB"][1]) == 8


def test_analyze_writes_the_report_on_a_partial_run(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--cuts", "1,2", "--variants", "BnB,AnB", "--networks",
                 "baseA,baseB,B1B,A1B,B1A,A1A")
    assert result.exit_code == 0, result.output
    result = cli("analyze", run)
    assert result.exit_code == 0, result.output
    assert "partial run" in result.output and "claim 8" in result.output
    out = run / "analysis"
    for name in ("report.md", "report.html", "accuracies.csv", "decomposition.csv", "claims.json",
                 "figures/figure2_random.png", "figures/figure2_random.svg", "figures/figure3.png"):
        assert (out / name).exists(), name
    md = (out / "report.md").read_text()
    assert "Partial run" in md and "random-s0/init0/A2B" in md and "figures/figure2_random.png" in md
    assert "data:image/png;base64," in (out / "report.html").read_text()
    ds, missing = accuracy_dataset(run)
    assert len(missing) == 4 and np.isfinite(ds["acc"].sel(n=1, variant="AnB")).all()
    import xarray as xr

    stored = xr.open_zarr(out / "accuracies.zarr").load()
    xr.testing.assert_allclose(stored[["acc", "base"]], ds[["acc", "base"]])


def test_a_negligible_real_difference_does_not_fail_a_no_difference_claim():
    rng = np.random.default_rng(5)

    def slightly_better(s):
        v = paper_like(s, noise=0.0005, rng=rng)
        return v + 0.004 if Variant.of(s).name == "BnB+" else v  # real, tight, but within the 0.02 margin

    claim3 = {c.number: c for c in check_claims(_dataset(_specs(), slightly_better))}[3]
    assert claim3.verdict == HOLDS, claim3.evidence


def test_bases_only_run_leaves_claims_undecided():
    specs = [s for s in _specs(seeds=(0, 1)) if s.variant == "base"]
    claims = check_claims(_dataset(specs, paper_like))
    assert {c.verdict for c in claims} == {UNDECIDED}


def _asymmetric(s, rng=None):
    """The paper's pattern, but the B->A direction (target A) loses 0.04 more at every cut, plus seed noise."""
    v = paper_like(s)
    if s.target == "A" and s.variant == "transfer":
        v -= 0.04
    return v + (rng.normal(scale=0.01) if rng is not None else 0.0)


def test_a_seed_is_the_mean_of_its_two_directions():
    rng = np.random.default_rng(6)
    ds = _dataset(_specs(), lambda s: _asymmetric(s, rng))
    dec = decompose(ds)["specialization"].sel(split="random", n=3)
    per_seed = dec.mean("target").values  # the other formulation: by hand, one value per seed
    e = summarize(decompose(ds)["specialization"])[("random", 3)]
    assert e.replicates == 3 and e.mean == pytest.approx(per_seed.mean())
    assert (e.low, e.high) == pytest.approx(tuple(stats.t.interval(0.95, 2, per_seed.mean(), stats.sem(per_seed))))
    pooled = summarize(decompose(ds)["specialization"], pooled=True)[("random", 3)]
    assert pooled.mean == pytest.approx(e.mean) and pooled.replicates == 6
    # the two directions differ systematically: pooling them as replicates would mix that into the noise
    assert pooled.high - pooled.low != pytest.approx(e.high - e.low)


def test_per_direction_rows_separate_an_asymmetric_split():
    ds = _dataset(_specs(), _asymmetric)
    rows = {(r["direction"], r["quantity"], r["n"]): r for r in direction_rows(ds)}
    assert rows[("A->B", "specialization", 3)]["mean"] == pytest.approx(0.09)
    assert rows[("B->A", "specialization", 3)]["mean"] == pytest.approx(0.13)
    assert rows[("A->B", "specialization", 3)]["replicates"] == 3
    assert {r["over"] for r in summary_rows(ds)} == {"seeds"}
    assert {r["over"] for r in summary_rows(ds, pooled=True)} == {"seeds and directions (pooled)"}


def test_one_seed_gives_no_interval_unless_directions_are_pooled():
    rng = np.random.default_rng(7)
    ds = _dataset(_specs(seeds=(0,)), lambda s: paper_like(s, noise=0.01, rng=rng))
    e = summarize(decompose(ds)["coadaptation"])[("random", 4)]
    assert e.replicates == 1 and not e.has_interval
    assert summarize(decompose(ds)["coadaptation"], pooled=True)[("random", 4)].has_interval
    assert {c.verdict for c in check_claims(ds)} == {UNDECIDED}


def test_a_missing_direction_at_one_cut_does_not_make_a_difference_between_cuts():
    """Claims 2 and 5 compare cuts: with the B->A direction of every seed missing at the top cut, the differences
    are taken within the direction that has both cuts, never between different directions."""
    specs = _specs()

    def bases_apart(s):
        v = paper_like(s)
        return v + (0.1 if s.target == "A" else -0.2)  # the two tasks' accuracies far apart

    acc = {s.id: bases_apart(s) for s in specs if not (s.target == "A" and s.cut == 7)}
    claims = {c.number: c for c in check_claims(build_dataset(specs, acc))}
    recovery = next(e for e in claims[2].evidence if "recovery" in e)
    assert "+0.0500" in recovery, recovery  # the paper_like recovery from the dip at n = 4 to n = 7
    assert claims[2].verdict == HOLDS and claims[5].verdict == HOLDS


def test_line_fits_agree_with_the_closed_form_and_skip_what_cannot_be_fitted():
    import numpy as np

    from probe.analysis.stats import line_fits
    from probe.errors import ProbeError

    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array([[1.0, 3.0, 2.0, 5.0], [0.0, np.nan, 1.0, 2.0], [1.0, np.nan, np.nan, np.nan]])
    a, b = line_fits(x, y)
    slope = np.cov(x, y[0], ddof=1)[0, 1] / np.var(x, ddof=1)
    assert b[0] == pytest.approx(slope) and a[0] == pytest.approx(y[0].mean() - slope * x.mean())
    ok = np.isfinite(y[1])
    assert b[1] == pytest.approx(np.polyfit(x[ok], y[1][ok], 1)[0])
    assert np.isnan(a[2]) and np.isnan(b[2])  # one point: no line
    # adding a constant to a replicate moves its intercept, never its slope
    assert line_fits(x, y + 7.0)[1][:2] == pytest.approx(b[:2])
    with pytest.raises(ProbeError, match=r"\(replicates, k\)"):
        line_fits(x, y[:, :3])


def test_the_papers_training_curves_show_its_dip_as_an_underfit():
    """The shipped curves: eight bases and four selffers a cut; the selffer at n = 5 ends the first learning-rate phase
    well above its base's training loss, and the whole run above it, as the authors' logs read."""
    from probe.analysis.reference import PAPER_ITERATIONS, reference_curve_mean

    base_end, bases = reference_curve_mean("base", 0, PAPER_ITERATIONS)
    bnb_end, selffers = reference_curve_mean("BnB", 5, PAPER_ITERATIONS)
    assert (bases, selffers) == (8, 4)
    assert base_end == pytest.approx(0.43, abs=0.01) and bnb_end == pytest.approx(1.07, abs=0.01)
    assert reference_curve_mean("BnB", 5, 100_000)[0] > reference_curve_mean("base", 0, 100_000)[0] + 1
    assert reference_curve_mean("BnB", 5, 123)[1] == 0  # no such iteration: no networks, NaN


def test_a_warning_that_voids_a_split_leaves_its_claims_undecided():
    """On the paper's pattern claims 2, 4, 5 and 6 hold; each voiding warning of the random split (bases at chance,
    still improving, trained longer gaining, a cut network far above its base) leaves them undecided, with the
    warning's reason in their evidence; a warning of another split leaves them as they were."""
    from probe.analysis.sanity import VOIDING_LABELS, Finding, voids

    rng = np.random.default_rng(1)
    ds = _dataset(_specs(), lambda s: paper_like(s, noise=0.002, rng=rng))
    decided = {c.number: c.verdict for c in check_claims(ds)}
    for check in ("chance", "convergence", "not-converged", "beats-base"):
        found = [Finding(check, f"a {check} warning", "random"), Finding("imbalance", "unequal classes", "random")]
        claims = {c.number: c for c in check_claims(ds, voided=voids(found))}
        for number in (2, 4, 5, 6):
            assert decided[number] == HOLDS and claims[number].verdict == UNDECIDED, (check, number)
            assert f"would give 'holds' but a {check} warning" in claims[number].evidence[-1]
            # the terminal's claim line and the report's table say why, not a bare "undecided"
            assert claims[number].verdict_text == f"undecided (voided: {VOIDING_LABELS[check]})"
            assert claims[number].to_dict()["voided"] == [VOIDING_LABELS[check]]
        assert not any("unequal classes" in line for c in claims.values() for line in c.evidence)  # not voiding
    elsewhere = check_claims(ds, voided=voids([Finding("chance", "at chance", "vehicles-animals")]))
    assert {c.number: c.verdict for c in elsewhere} == decided


def test_top1_verdicts_stand_only_where_the_balanced_accuracy_reaches_them():
    """On unequal test classes top-1 may decide what the class-balanced accuracy does not: then it says so."""
    from probe.analysis.claims import supported

    rng = np.random.default_rng(1)
    top1 = check_claims(_dataset(_specs(), lambda s: paper_like(s, noise=0.002, rng=rng)))
    flat = check_claims(_dataset(_specs(), lambda s: 0.8))  # the balanced accuracy: no pattern at all
    claims = {c.number: c for c in supported(top1, flat, "class-balanced")}
    assert claims[4].verdict == UNDECIDED and "the class-balanced accuracy gives 'undecided'" in claims[4].evidence[-1]
    assert {c.number: c.verdict for c in supported(top1, top1, "class-balanced")} == {c.number: c.verdict
                                                                                      for c in top1}


def test_a_run_trained_in_one_direction_is_not_said_to_have_two():
    from probe.analysis.accuracies import format_table, trained_targets

    rng = np.random.default_rng(1)
    ds = _dataset(_specs(), lambda s: paper_like(s, noise=0.002, rng=rng))
    assert trained_targets(ds) == ["A", "B"] and "over seeds and both directions" in format_table(ds)
    one = ds.copy()
    one["base"] = ds["base"].where(ds["target"] == "B")
    one["acc"] = ds["acc"].where(ds["target"] == "B")
    assert trained_targets(one) == ["B"]
    assert "both directions" not in format_table(one) and "over seeds (networks)" in format_table(one)
