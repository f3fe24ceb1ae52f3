"""benchmarks/speed.py runs end to end on tiny sizes and writes every field it promises."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # noqa: E402

TINY = ["--device", "cpu", "--threads", "1", "--n-images", "32", "--batch-size", "16", "--resnet-n-images", "2",
        "--resnet-batch-size", "2", "--pgd-epochs", "1", "--amata-epochs", "2", "--repeats", "1",
        "--overhead-steps", "2", "--matmul-size", "128"]


def test_speed_script_writes_positive_measurements(tmp_path):
    out = tmp_path / "cpu.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), *TINY, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["schema"] == "amata-speed/1"
    assert result["provenance"]["command"].startswith("python ") and result["provenance"]["device"].startswith("cpu")
    assert result["peak"]["flops_per_s"] > 0 and result["peak"]["source"].startswith("measured")
    assert set(result["models"]) == {"lenet", "preact_resnet18"}
    for r in result["models"].values():
        assert r["flops"]["train_step_per_image"] > r["flops"]["attack_pass_per_image"] > 0
        for key in ("input_grad_pass_s", "pgd_s", "attack_overhead", "attack_image_passes_per_s", "train_step_s"):
            assert r["micro"][key] > 0, key
        for run in ("pgd10", "amata"):
            for key in ("mean_epoch_time_s", "image_passes_per_s", "flops_per_s", "peak_fraction"):
                assert r[run][key] > 0, (run, key)
        assert r["pgd10"]["steps"] == [10] and r["amata"]["steps"] == [2, 6]
        assert r["amata"]["relative_passes"] == pytest.approx((3 + 7) / 22)
        assert 0 < r["amata"]["relative_time_from_microbench"] < 1
        assert r["amata_over_pgd10_time"] > 0 and r["pgd10"]["epoch_over_microbench"] > 0


@pytest.mark.parametrize("name, precision, label", [
    ("NVIDIA H100 80GB HBM3", "bf16", "H100 SXM"), ("NVIDIA H100 PCIe", "tf32", "H100 PCIe"),
    ("NVIDIA H200", "fp32", "H200 SXM"), ("NVIDIA H200 NVL", "bf16", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "tf32", "A100"),
])
def test_peak_table_recognises_datacentre_gpus(name, precision, label):
    rate, source = speed.table_peak(name, precision)
    assert label in source and precision in source and rate > 1e13
    assert speed.table_peak("NVIDIA GeForce RTX 4090", "bf16") is None


def test_bf16_is_refused_on_cpu():
    import torch
    with pytest.raises(ValueError, match="precision"):
        speed.set_precision(torch.device("cpu"), "bf16")
