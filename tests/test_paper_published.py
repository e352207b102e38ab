"""The paper's numbers were entered as printed."""

import pytest

from medvisionllama.paper.published import load_published, model_label, published_params, published_value
from medvisionllama.tasks import TASKS


def test_table2_shape_and_spot_values():
    t2 = load_published("table2")
    assert len(t2) == 10 * 2 * 6
    assert set(t2["task"]) == set(TASKS)
    assert published_value("table2", "dice", "vit", "Task01_BrainTumour") == (0.72, 0.14)
    assert published_value("table2", "dice", "llama3.1-8b", "Task01_BrainTumour") == (0.84, 0.11)
    assert published_value("table2", "hd95", "llama3.1-8b", "Task03_Liver") == (10.8, 2.5)
    assert published_value("table2", "jaccard", "vit", "Task08_HepaticVessel") == (0.60, 0.13)


def test_table2_averages_match_the_text():
    t2 = load_published("table2")
    mean = t2.groupby(["metric", "model"])["mean"].mean()
    assert mean["dice", "vit"] == pytest.approx(0.738) and mean["dice", "llama3.1-8b"] == pytest.approx(0.79)
    assert mean["hd95", "vit"] == pytest.approx(15.41) and mean["hd95", "llama3.1-8b"] == pytest.approx(11.65)


def test_table4_and_params():
    assert published_value("table4", "dice", "yi1.5-9b", "Task06_Lung") == (0.86, 0.12)
    assert published_value("table4", "dice", "qwen2-7b", "Task02_Heart") == (0.76, 0.13)  # printed "± 0.76 ± 0.13"
    assert len(load_published("table4").query("metric == 'dice'")) == 60
    params = published_params("table4").set_index("model")["params_m"]
    assert params["gemma2-9b"] == 264.25 and params["qwen2-7b"] == 233.06 and params["vit"] == 0.84


def test_table3_and_appendix_tables():
    assert published_value("table3", "dice", "llama3.1-8b", "Task01_BrainTumour", "spatial") == (0.79, 0.04)
    assert published_value("table3", "dice", "mlp", "Task03_Liver") == (0.65, 0.11)
    assert published_value("table3", "params_m", "llama3.1-8b", "", "spatial")[0] == 204.48
    assert published_value("appendix_table1", "params_m", "llama3.1-8b", "", "hybrid-interleaved")[0] == 62.7
    assert published_value("appendix_table1", "dice", "llama3.1-8b", "Task03_Liver", "hybrid-parallel") == (0.72, 0.05)
    assert published_value("appendix_table2", "train_hours", "llama3.1-8b", "", size="128x128x80")[0] == 4.21
    assert published_value("appendix_table2", "dice", "vit", "", size="240x240x156") == (0.79, 0.02)
    assert published_value("appendix_table3", "hd95", "yi1.5-9b", "Task01_BrainTumour") == (7.9, 3.3)


def test_inconsistencies_are_noted_not_fixed():
    t3 = published_value("table3", "dice", "vit", "Task01_BrainTumour")
    assert t3 == (0.72, 0.08)
    notes = load_published("table3").set_index(["task", "model", "attention", "metric"])["note"]
    assert "0.14" in notes["Task01_BrainTumour", "vit", "hybrid-sequential", "dice"]
    assert published_value("appendix_table3", "hd95", "vit", "Task01_BrainTumour")[0] == 12.5
    assert "typo" in load_published("table4").query("task == 'Task02_Heart' and model == 'qwen2-7b'")["note"].iloc[0]


def test_model_labels():
    assert model_label("llama3.1-8b") == "ViT + Llama"
    assert model_label("smollm2-135m-random") == "ViT + SmolLM2-135M (Gaussian control)"
    assert model_label("smollm2-135m-shuffled") == "ViT + SmolLM2-135M (shuffled control)"
