"""The checks to run first on a lent GPU machine (no Ray there), run here on the CPU so they cannot rot."""
import json

import pytest


@pytest.mark.slow  # an end-to-end command run
def test_the_device_check_runs_every_check_on_the_cpu(tmp_path, capsys, monkeypatch):
    from cyclegan.cli import main
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "--device_check", "--device", "cpu", "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
                 "--crop_size", "32", "--load_size", "32", "--iters", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0, lines
    assert [(x["check"], x.get("amp")) for x in lines] == [
        ("train_step", "none"), ("train_step", "bf16"), ("train_step", "fp16"), ("collectives", None),
        ("resume_cpu_checkpoint", None), ("onnx", None)]
    assert all(x["ok"] is True for x in lines if x.get("amp") != "fp16")
    fp16 = lines[2]
    assert fp16["ok"] is None and fp16["skipped"] == "fp16 needs CUDA"  # said, not silently left out
    assert lines[3]["backend"] == "gloo" and lines[5]["provider"] == "CPUExecutionProvider"
    assert lines[5]["max_abs_difference"] < 1e-3 and lines[4]["sec_per_iter"] > 0
