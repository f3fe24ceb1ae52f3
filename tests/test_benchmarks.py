"""benchmarks/speed.py runs end to end on tiny sizes and writes every field it promises."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed  # noqa: E402

TINY = ["--device", "cpu", "--threads", "1", "--n-images", "32", "--batch-size", "16", "--resnet-n-images", "2",
        "--resnet-batch-size", "2", "--pgd-epochs", "1", "--amata-epochs", "2", "--repeats", "1",
        "--overhead-steps", "2", "--matmul-size", "128", "--versus-n-images", "32"]


@pytest.mark.slow
def test_speed_script_writes_positive_measurements(tmp_path, monkeypatch, capsys):
    """speed.py's main, in this process, as `python benchmarks/speed.py ARGS` calls it (its torch thread count
    restored afterwards)."""
    out = tmp_path / "cpu.json"
    argv = [*TINY, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "speed.py"), *argv])
    threads = torch.get_num_threads()
    try:
        speed.main(argv)
    finally:
        torch.set_num_threads(threads)
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout  # main ran to its end (the exit status 0 of the script)
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
    check_versus(result["versus"], n_images=32, batch=16, repeats=1)
    b = result["bf16"]
    assert b["bf16_over_fp32"] > 0
    assert b["bf16_over_fp32"] == pytest.approx(b["median_s"]["bf16"] / b["median_s"]["fp32"])
    assert isinstance(b["cpu_has_bf16"], bool) and "bf16 / fp32 time = " in stdout
    if speed.load_torchattacks()[0] is not None:  # installed with the bench extra (make install)
        assert "torchattacks_pgd_loop" in result["versus"]["ours_over_peer"]
        assert "ours / torchattacks_pgd_loop = " in stdout


def check_versus(v, n_images, batch, repeats):
    """The row of ours versus the peer loops: real timings of the same work."""
    assert v["model"] == "lenet" and v["input_shape"] == [1, 28, 28] and v["steps"] == 10
    assert v["n_images"] == n_images and v["batch_size"] == batch and v["minibatches"] == -(-n_images // batch)
    contenders = {"amata_lib", *v["ours_over_peer"]}
    assert "kolter_madry_loop" in contenders
    assert contenders | set(v["skipped"]) == {"amata_lib", "kolter_madry_loop", "torchattacks_pgd_loop"}
    for name in contenders:
        assert len(v["epoch_times_s"][name]) == repeats and all(t > 0 for t in v["epoch_times_s"][name])
        assert v["median_epoch_time_s"][name] in v["epoch_times_s"][name]
        # every contender: 10 attack passes + 1 training pass per minibatch, counted on the model itself
        assert v["forward_passes_per_epoch"][name] == v["minibatches"] * (10 + 1), name
    for peer, ratio in v["ours_over_peer"].items():
        assert ratio == pytest.approx(v["median_epoch_time_s"]["amata_lib"] / v["median_epoch_time_s"][peer])
        paired = [a / b for a, b in zip(v["epoch_times_s"]["amata_lib"], v["epoch_times_s"][peer])]
        assert v["ours_over_peer_paired"][peer] in paired


def test_versus_row_skips_torchattacks_with_a_reason_when_it_is_absent(monkeypatch):
    import torch
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` now raises ImportError
    v = speed.versus(n_images=24, batch=16, repeats=1, device=torch.device("cpu"))
    assert set(v["ours_over_peer"]) == {"kolter_madry_loop"}
    assert "pip install" in v["skipped"]["torchattacks_pgd_loop"]
    check_versus(v, n_images=24, batch=16, repeats=1)


def test_kolter_madry_attack_stays_in_the_ball_and_raises_the_loss():
    import torch
    import torch.nn.functional as F

    from amata_lib import LeNet
    torch.manual_seed(0)
    model, x, y = LeNet(), torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x_adv = speed.kolter_madry_pgd(model, x, y, eps=0.3, alpha=0.075, steps=10)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_versus_row_refuses_batches_it_cannot_count():
    with pytest.raises(SystemExit):
        speed.parse(["--device", "cpu", "--batch-size", "16", "--versus-n-images", "33"])


@pytest.mark.parametrize("name, precision, label", [
    ("NVIDIA H100 80GB HBM3", "bf16", "H100 SXM"), ("NVIDIA H100 PCIe", "tf32", "H100 PCIe"),
    ("NVIDIA H200", "fp32", "H200 SXM"), ("NVIDIA H200 NVL", "bf16", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "tf32", "A100"),
])
def test_peak_table_recognises_datacentre_gpus(name, precision, label):
    rate, source = speed.table_peak(name, precision)
    assert label in source and precision in source and rate > 1e13
    assert speed.table_peak("NVIDIA GeForce RTX 4090", "bf16") is None


def test_tf32_is_refused_on_cpu_and_bf16_allowed():
    import torch
    with pytest.raises(ValueError, match="precision 'tf32' needs CUDA"):
        speed.set_precision(torch.device("cpu"), "tf32")
    speed.set_precision(torch.device("cpu"), "bf16")  # autocast on the CPU: allowed
