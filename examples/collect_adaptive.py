"""Collect the `trl-laser adaptive` reports under docs/adaptive/TASK/ into docs/adaptive/results.json.

    trl-laser adaptive --model_name_or_path outputs/repro/compare/seed0/laser --dataset_name builtin:compare \\
        --num_problems 96 --max_new_tokens 16 --batch_size 128 --output_dir outputs/adaptive/compare
    mkdir -p docs/adaptive/compare && cp outputs/adaptive/compare/{results.json,adaptive.md,adaptive_curves.png} \\
        docs/adaptive/compare/
    python examples/collect_adaptive.py

Per task: the share of K samples each stopping rule needs to reach fixed-K r_s-weighted maj@K within half a point,
the target it is measured against, and every rule's accuracy-compute points beside the fixed-K curves.
"""

import json
import os
import sys


def collect(root: str = "docs/adaptive") -> dict:
    summary = {}
    for task in sorted(os.listdir(root)):
        path = os.path.join(root, task, "results.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            results = json.load(f)
        k = results["generation"]["num_samples"]
        summary[f"builtin:{task}"] = {
            "samples_fraction_to_match_weighted_maj8": results[f"samples_fraction_to_match_weighted_maj@{k}"],
            "target": results["target"],
            "curves": {"fixed": results["fixed"], "rules": results["rules"]},
            "model": results["model"],
            "num_problems": results["num_problems"],
            "round_size": results["generation"]["round_size"],
        }
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


if __name__ == "__main__":
    for task, entry in collect(*sys.argv[1:]).items():
        print(task, entry["samples_fraction_to_match_weighted_maj8"])
