"""scripts/gpu_check.sh on a machine without CUDA: it reports the machine, says plainly that the
CUDA steps are skipped, and succeeds (CI runs it there; on a GPU it runs the benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the GPU benchmarks (minutes)")
def test_gpu_check_skips_the_cuda_steps_with_a_clear_line_and_succeeds(tmp_path):
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PY": sys.executable, "DFF_GPU_CHECK_DIR": str(tmp_path)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"torch {torch.__version__}" in run.stdout
    assert "no CUDA GPU here: the CUDA tests and the GPU benchmarks are skipped" in run.stdout
    assert "tiny-cuda-nn:" in run.stdout and "== lego" not in run.stdout
