"""The recipe-v2 comparison table (Markdown on stdout) from the runs that
trainer/experiments/recipe-v2.sh leaves in runs/experiments/: random init
(the demo), MAE init, SWA, the two other seeds, and the 3-seed ensemble.

Every figure comes from `cxr-trainer evaluate`'s per-study rows (the
appliance's study path on each locked bundle). The ensemble row of the main
table is the mean of its three members' calibrated probabilities per study,
computed here from those rows, not recalibrated as a whole.
`recipe-v2-table.py ensemble` compares the members with the ensemble locked
as one bundle (trainer/experiments/ensemble.sh), which the appliance runs
and which is recalibrated as a whole.

Intervals: 95%, 500 resamples of patients (Python's generator, seed 1,
for each interval), interpolated as `evaluate` does; its own generator
differs, so the demo's interval here differs from its report's in the last
digits.
Macro AUROC is over the NIH test labels with at least 5 positive and 5
negative patients, the same set for every row.
"""
import json
import random
import sys

RUNS = "runs/experiments"
ROWS = [
    ("random init (the demo)", ["demo-nih"]),
    ("MAE init (NIH and Kermany films, 12 epochs)", ["mae-init"]),
    ("the same, layer decay 0.75", ["mae-init-layer-decay"]),
    ("MAE init (NIH films only, 12 epochs)", ["mae-nih-only-init"]),
    ("MAE init (NIH films only, 100 epochs)", ["mae-nih-only-long-init"]),
    ("SWA (epochs 7-12)", ["swa"]),
    ("seed 2", ["seed-2"]),
    ("seed 3", ["seed-3"]),
    ("3-seed ensemble (demo, seed 2, seed 3)", ["demo-nih", "seed-2", "seed-3"]),
]


def auroc(scores, truth):
    pos = [s for s, t in zip(scores, truth) if t == 1.0]
    neg = [s for s, t in zip(scores, truth) if t == 0.0]
    if not pos or not neg:
        return None
    # Rank-sum with ties counted half.
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2.0
        rank_sum += mid * sum(1 for k in range(i, j) if ranked[k][1] == 1)
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg))


def studies(names, evaluation):
    """Per study: (patient, probabilities averaged over the members, truth),
    for the studies every member scored."""
    members = [json.load(open(f"{RUNS}/{n}/{evaluation}.json")) for n in names]
    by_image = [{r["image"]: r for r in m["rows"]} for m in members]
    out = []
    for image, first in by_image[0].items():
        rows = [b.get(image) for b in by_image]
        if any(r is None or r.get("probabilities") is None for r in rows):
            continue
        probs = [sum(r["probabilities"][l] for r in rows) / len(rows) for l in range(len(first["probabilities"]))]
        out.append((first["patient"], probs, first["truth"], image))
    coverage = [m["coverage"] for m in members]
    return out, coverage


def metric(rows, labels):
    values = []
    for l in labels:
        a = auroc([r[1][l] for r in rows], [r[2][l] for r in rows])
        if a is None:
            return None
        values.append(a)
    return sum(values) / len(values)


def percentile(sorted_values, q):
    """Linear interpolation at q * (n - 1), as trainer/src/eval.rs does."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = int(pos // 1), int(-(-pos // 1))
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def with_interval(rows, labels):
    """The metric and its interval; a resample where a label has only one
    class is left out (at most a few here; the count is shown when any)."""
    value = metric(rows, labels)
    if value is None:
        return "-"
    patients = {}
    for r in rows:
        patients.setdefault(r[0], []).append(r)
    keys = sorted(patients)
    rng = random.Random(1)
    draws = []
    for _ in range(500):
        sample = [r for k in (rng.choice(keys) for _ in keys) for r in patients[k]]
        m = metric(sample, labels)
        if m is not None:
            draws.append(m)
    if len(draws) < 100:
        return f"{value:.3f}"
    draws.sort()
    left_out = "" if len(draws) == 500 else f" [{500 - len(draws)} resamples undefined]"
    return f"{value:.3f} ({percentile(draws, 0.025):.3f}-{percentile(draws, 0.975):.3f}){left_out}"


def paired_difference(rows, base, labels):
    """This model's metric minus the base model's on the same studies, with
    the interval from resampling patients once for both (a paired
    bootstrap): an interval that excludes 0 is a difference these patients
    show, not one two separate intervals could hide."""
    base_by_image = {r[3]: r for r in base}
    pairs = [(r, base_by_image[r[3]]) for r in rows if r[3] in base_by_image]
    def diff(sample):
        a, b = metric([p[0] for p in sample], labels), metric([p[1] for p in sample], labels)
        return None if a is None or b is None else a - b
    value = diff(pairs)
    if value is None:
        return "-"
    patients = {}
    for p in pairs:
        patients.setdefault(p[0][0], []).append(p)
    keys = sorted(patients)
    rng = random.Random(1)
    draws = sorted(d for d in (diff([p for k in (rng.choice(keys) for _ in keys) for p in patients[k]]) for _ in range(500)) if d is not None)
    if len(draws) < 100:
        return f"{value:+.3f}"
    left_out = "" if len(draws) == 500 else f" [{500 - len(draws)} resamples undefined]"
    return f"{value:+.3f} ({percentile(draws, 0.025):+.3f} to {percentile(draws, 0.975):+.3f}){left_out}"


def evaluable(rows, n_labels):
    """Labels with at least 5 positive and 5 negative patients."""
    keep = []
    for l in range(n_labels):
        pos = {r[0] for r in rows if r[2][l] == 1.0}
        neg = {r[0] for r in rows if r[2][l] == 0.0}
        if len(pos) >= 5 and len(neg) >= 5:
            keep.append(l)
    return keep


def main():
    demo = json.load(open(f"{RUNS}/demo-nih/nih-test.json"))
    names = [l["label"] for l in demo["labels"]]
    base, _ = studies(["demo-nih"], "nih-test")
    macro = evaluable(base, len(names))
    pneumonia = [names.index("Pneumonia")]
    print(f"Macro AUROC over {len(macro)} labels: {', '.join(names[l] for l in macro)}.\n")
    print("| model | NIH test: coverage | NIH test: macro AUROC | NIH test: Pneumonia AUROC | Kermany external: coverage | Kermany external: Pneumonia AUROC |")
    print("|---|---:|---|---|---:|---|")
    differences = []
    base_nih, base_ker = base, studies(["demo-nih"], "kermany-external")[0]
    for title, members in ROWS:
        try:
            nih, nih_cov = studies(members, "nih-test")
            ker, ker_cov = studies(members, "kermany-external")
        except FileNotFoundError as e:
            print(f"| {title} | not run ({e.filename}) | | | | |")
            continue
        cov = lambda c: "/".join(f"{x * 100:.1f}%" for x in c)
        print(f"| {title} | {cov(nih_cov)} | {with_interval(nih, macro)} | {with_interval(nih, pneumonia)} | {cov(ker_cov)} | {with_interval(ker, pneumonia)} |")
        if members != ["demo-nih"]:
            differences.append(f"| {title} | {paired_difference(nih, base_nih, macro)} | {paired_difference(nih, base_nih, pneumonia)} | {paired_difference(ker, base_ker, pneumonia)} |")
    print("\nThe same, each model minus random init on the same studies (paired: 500 resamples of patients, both models in each):\n")
    print("| model | NIH test: macro AUROC | NIH test: Pneumonia AUROC | Kermany external: Pneumonia AUROC |")
    print("|---|---|---|---|")
    print("\n".join(differences))


def ensemble_table():
    """The 3-seed ensemble locked as one bundle (runs/experiments/ensemble-3,
    trainer/experiments/ensemble.sh) against each of its members alone and
    against the offline mean of their rows."""
    demo = json.load(open(f"{RUNS}/demo-nih/nih-test.json"))
    names = [l["label"] for l in demo["labels"]]
    base, _ = studies(["demo-nih"], "nih-test")
    macro = evaluable(base, len(names))
    pneumonia = [names.index("Pneumonia")]
    rows = [
        ("demo (seed 1)", ["demo-nih"]),
        ("seed 2", ["seed-2"]),
        ("seed 3", ["seed-3"]),
        ("offline mean of the three members' rows", ["demo-nih", "seed-2", "seed-3"]),
        ("the ensemble bundle (recalibrated as a whole)", ["ensemble-3"]),
    ]
    print(f"Macro AUROC over {len(macro)} labels: {', '.join(names[l] for l in macro)}.\n")
    print("| model | NIH test: coverage | NIH test: macro AUROC | NIH test: Pneumonia AUROC | Kermany external: coverage | Kermany external: Pneumonia AUROC |")
    print("|---|---:|---|---|---:|---|")
    got = {}
    for title, members in rows:
        nih, nih_cov = studies(members, "nih-test")
        ker, ker_cov = studies(members, "kermany-external")
        got[title] = (nih, ker)
        cov = lambda c: "/".join(f"{x * 100:.1f}%" for x in c)
        print(f"| {title} | {cov(nih_cov)} | {with_interval(nih, macro)} | {with_interval(nih, pneumonia)} | {cov(ker_cov)} | {with_interval(ker, pneumonia)} |")
    print("\nThe ensemble bundle minus each member alone, on the studies both scored (paired: 500 resamples of patients):\n")
    print("| member | NIH test: macro AUROC | NIH test: Pneumonia AUROC | Kermany external: Pneumonia AUROC |")
    print("|---|---|---|---|")
    nih, ker = got[rows[-1][0]]
    for title, _ in rows[:3]:
        bn, bk = got[title]
        print(f"| {title} | {paired_difference(nih, bn, macro)} | {paired_difference(nih, bn, pneumonia)} | {paired_difference(ker, bk, pneumonia)} |")


if __name__ == "__main__":
    sys.exit(ensemble_table() if sys.argv[1:] == ["ensemble"] else main())
