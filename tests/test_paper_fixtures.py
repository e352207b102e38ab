"""Hand-made runs for the paper tests: tiny long tables, run folders, samples (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medvisionllama.paper.aggregate import METRICS_COLUMNS, per_case_means
from medvisionllama.vocabulary import METRIC_NAMES, RunKey

PARAMS = {"vit": 0.84e6, "mlp": 0.96e6, "smollm2-135m": 4.1e6, "llama3.1-8b": 218.96e6}


#: HD95 of a miss in these fixtures (the "image diagonal")
DIAGONAL = 80.0


def metrics_rows(task, model, attention, size, seed, dice_by_case, classes=("a", "b"), missed=()) -> pd.DataFrame:
    """metrics.csv rows: each case's foreground classes get dice = case value -/+ 0.05 (mean = value),
    status ``defined``. ``missed``: (case, class_index) pairs the model missed: scored as
    evaluation scores a miss (Dice, Jaccard, precision, recall 0; HD95 = DIAGONAL), ``penalised``."""
    rows = []
    for case, dice in dice_by_case.items():
        for k, name in enumerate(classes, start=1):
            d = dice + (0.05 if k == 2 else -0.05) if len(classes) == 2 else dice
            row = {"task": task, "model": model, "attention": attention, "size": size, "seed": seed,
                   "case_id": case, "class_index": k, "class_name": name, "dice": d,
                   "jaccard": d / (2 - d), "precision": d, "recall": min(1.0, d + 0.1),
                   "accuracy": 0.9 + d / 10, "hd95": 20 * (1 - d)}
            row.update({f"{m}_status": "defined" for m in METRIC_NAMES})
            if (case, k) in missed:
                row.update(dice=0.0, jaccard=0.0, precision=0.0, recall=0.0, hd95=DIAGONAL)
                row.update({f"{m}_status": "penalised" for m in METRIC_NAMES if m != "accuracy"})
            rows.append(row)
    return pd.DataFrame(rows)[METRICS_COLUMNS]


def make_long(runs: dict[tuple, dict[str, float]], train_seconds: float = 36.0, epochs: int = 3,
              missed: dict[tuple, set] | None = None) -> pd.DataFrame:
    """A long table as `mvl aggregate` writes it. ``runs``: (task, model, attention, size, seed) -> {case: dice};
    ``missed``: run key -> (case, class_index) pairs missed (see :func:`metrics_rows`)."""
    parts = []
    for key, cases in runs.items():
        task, model, attention, size, seed = key
        m = metrics_rows(task, model, attention, size, seed, cases, missed=(missed or {}).get(key, ()))
        df = pd.concat([m, per_case_means(m)], ignore_index=True)[METRICS_COLUMNS]
        df["params_total"] = PARAMS.get(model, 1e6) * (1.02 if attention == "spatial" else 1.0)
        df["params_trainable"] = 0.8e6
        df["train_seconds"] = train_seconds * (2 if model != "vit" else 1)
        df["device"] = "cpu"
        df["epochs"] = epochs
        df["run"] = f"{task}/{model}/{attention}/{size}/seed{seed}"
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def grid(tasks, models, attention=("hybrid-sequential",), sizes=("32x32x16",), seeds=(0,), n_cases=6, gain=0.1, seed=0):
    """Runs of a grid: baseline dice ~0.6 per case, every non-'vit' model ``gain`` higher, per-case noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for t in tasks:
        base = {f"case{i:02d}": float(0.55 + 0.1 * rng.random()) for i in range(n_cases)}
        for m in models:
            for a in attention:
                for s in sizes:
                    for sd in seeds:
                        bump = 0.0 if m == "vit" else gain
                        bump -= 0.02 if a in ("spatial", "hybrid-parallel") else 0.0
                        out[(t, m, a, s, sd)] = {c: v + bump + 0.01 * rng.standard_normal() for c, v in base.items()}
    return out


def write_run_dir(root: Path, task, model, attention, size, seed, cases: dict[str, float], epochs: int = 4) -> Path:
    """A run folder as the pipeline writes it (metrics.csv, run.json, history.csv, samples.npz)."""
    run = root / RunKey(task, model, attention, size, seed).path()
    run.mkdir(parents=True)
    metrics_rows(task, model, attention, size, seed, cases).to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({"params": {"total": PARAMS.get(model, 1e6), "trainable": 8e5},
                                              "train_seconds": 12.5, "seed": seed, "device": "cpu"}))
    e = np.arange(1, epochs + 1)
    bonus = 0.0 if model == "vit" else 0.05
    pd.DataFrame({"epoch": e, "train_loss": 1.0 / e, "train_dice": 0.5 + bonus + 0.05 * np.log(e),
                  "val_loss": 1.1 / e + 0.05, "val_dice": 0.45 + bonus + 0.05 * np.log(e),
                  "seconds": 3.0}).to_csv(run / "history.csv", index=False)
    np.savez(run / "samples.npz", **make_sample(model != "vit", seed=hash((task, model)) % 1000))
    return run


def make_sample(with_llm: bool = True, shape=(48, 48), channels: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A samples.npz payload: a bright blob as image, its mask as label, a shifted mask as prediction."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(x - shape[0] / 2, y - shape[1] / 2)
    label = (r < shape[0] / 5).astype(np.uint8) + (r < shape[0] / 10).astype(np.uint8)
    pred = np.roll(label, 2 + seed % 3, axis=0)
    image = np.stack([np.exp(-r / 10) + 0.1 * rng.standard_normal(shape) for _ in range(channels)]).astype(np.float32)
    sample = {"image": image, "label": label, "pred": pred, "case_id": np.array("case00"),
              "dice": np.array(0.8 - 0.01 * (seed % 10)), "act_V_E": rng.random(shape).astype(np.float32),
              "act_V_D": np.exp(-r / 8).astype(np.float32)}
    if with_llm:
        sample["act_V_LLM"] = np.exp(-r / 5).astype(np.float32)
    return sample


def test_fixture_grid_has_every_run():
    g = grid(["Task01_BrainTumour"], ["vit", "smollm2-135m"], seeds=(0, 1))
    assert len(g) == 4
    long = make_long(g)
    assert set(long["class_name"]) == {"a", "b", "mean"}
