"""The CUDA paths: training (cuDNN, fp32 and bf16 autocast), pinned batches, evaluation,
sampling and data-parallel training with nccl. Every test here needs a CUDA GPU and is
skipped without one; the CPU suite covers the same code on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from charrnn.checkpoint import load_checkpoint, model_from_checkpoint
from charrnn.data import StreamBatches
from charrnn.sample import generate
from charrnn.device import resolve_device, resolve_dtype
from charrnn.scoring import evaluate
from charrnn.train import train

from helpers import tiny_configs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_auto_precision_is_bfloat16_on_a_gpu_that_computes_it_natively():
    native = torch.cuda.get_device_capability()[0] >= 8        # Ampere and later
    assert resolve_dtype("auto", torch.device("cuda")) == ("bfloat16" if native else "float32")


def test_batches_for_a_gpu_are_pinned():
    batches = StreamBatches(np.arange(10_000) % 50, 4, 16, pin=True)
    assert batches.next().window.is_pinned()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_on_cuda_learns_and_saves_cpu_tensors(small_text, tmp_path, dtype):
    model_config, config = tiny_configs(out=str(tmp_path / "run"), device="cuda", dtype=dtype,
                                        max_steps=60, eval_every=30)
    result = train(small_text, model_config, config, progress=False)
    assert result.val_loss < 3.3                       # below the unigram model's loss
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(t.device.type == "cpu" for t in ckpt["model_state"].values())
    assert "cuda" in ckpt["rng"]


def test_cuda_evaluation_and_sampling_agree_with_the_cpu(tiny_run):
    ckpt = load_checkpoint(tiny_run / "best.pt")
    model, vocab = model_from_checkpoint(ckpt)
    ids = vocab.encode("ROMEO:\nWhat say you, my lord? Speak, for I am here.\n" * 20)
    on_cpu = evaluate(model, ids, torch.device("cpu"))
    on_gpu = evaluate(model.to("cuda"), ids, torch.device("cuda"))
    assert on_gpu == pytest.approx(on_cpu, abs=1e-4)
    greedy = "".join(generate(model, vocab, 40, prime="ROMEO:", greedy=True))
    back = "".join(generate(model.to("cpu"), vocab, 40, prime="ROMEO:", greedy=True))
    assert greedy == back


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs a GPU per process")
def test_nccl_data_parallel_matches_one_process(small_text, tmp_path):
    common = [str(small_text), "--hidden-size", "32", "--embedding-dim", "16",
              "--batch-size", "8", "--seq-length", "32", "--max-steps", "20",
              "--sample-every", "0", "--device", "cuda", "--quiet", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    one = subprocess.run([sys.executable, "-m", "charrnn", "train", *common, "--out", "one"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "charrnn", "train", *common, "--out",
                          "two"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert one.returncode == two.returncode == 0, two.stderr
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model_state"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
